"""The Luong decoder with input feeding's hand-written backward pass
(``seqjax.fed_decoder``, taken by ``Decoder.scan``).

Two independent references: JAX autodiff of a Python loop over the public
``Decoder.step`` (without the joint kernel), elementwise; and float64 NumPy
central differences of a NumPy step loop along random directions. Padding
on both sides: padded source positions, and padded target steps whose
outputs the loss weighs zero (as the training loss masks them).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax import fed_decoder
from seqjax.decoder import Decoder
from seqjax.cells import gru_update, lstm_update
from seqjax.recurrent import StepArrays

B, T, S, F, H = 3, 6, 5, 7, 4
SRC_LENGTHS = np.array([5, 2, 3])
TGT_LENGTHS = np.array([6, 3, 1])


def _arrays(score, seed=0):
  """Random parameters and inputs; the general score reads a memory wider
  than the decoder."""
  rng = np.random.default_rng(seed)
  m = 6 if score == "general" else H
  normal = lambda *shape: (rng.normal(size=shape) * 0.5).astype(np.float32)
  p = {"kernel": normal(F + H, 4 * H), "bias": normal(4 * H),
       "recurrent_kernel": normal(H, 4 * H), "combine": normal(m + H, H),
       "values": normal(B, S, m), "h0": normal(B, H), "c0": normal(B, H),
       "feed0": normal(B, H)}
  if score == "general":
    p["key_kernel"] = normal(m, H)
  x_BTF = normal(B, T, F)
  src_mask_BS = np.arange(S)[None] < SRC_LENGTHS[:, None]
  w_TBH = rng.normal(size=(T, B, H)).astype(np.float32)
  w_TBH *= (np.arange(T)[:, None] < TGT_LENGTHS[None])[..., None]
  return p, x_BTF, src_mask_BS, w_TBH


def _drop(rate, seed=1):
  if not rate:
    return None
  keep = np.random.default_rng(seed).random((T, B, H)) >= rate
  return (keep / (1.0 - rate)).astype(np.float32)


def _decoder(p, score, update=lstm_update, stacks=True) -> Decoder:
  layer = StepArrays(update, {"recurrent_kernel": p["recurrent_kernel"]},
                     p["kernel"], p["bias"], stacks)
  attention = {"key_kernel": p["key_kernel"]} if "key_kernel" in p else {}
  return Decoder(layers=(layer,), extra_in=H, kind="luong", feeds=True,
                 score=score, attention=attention, combine=p["combine"],
                 dtype=jnp.float32)


def _state(decoder, p, src_mask_BS):
  state = decoder.start(((p["h0"], p["c0"]),), p["values"], src_mask_BS, B)
  return state._replace(feed_BH=p["feed0"])


def _scan_loss(p, x_BTF, src_mask_BS, w_TBH, drop_TBH, score):
  decoder = _decoder(p, score)
  xw_TBG = jnp.swapaxes(decoder.project_tokens(x_BTF), 0, 1)
  out_TBH = decoder.scan(xw_TBG, _state(decoder, p, src_mask_BS), [drop_TBH])
  return (out_TBH * w_TBH).sum()


def _loop_loss(p, x_BTF, src_mask_BS, w_TBH, drop_TBH, score):
  """Autodiff's reference: the public step, a Python loop."""
  decoder = _decoder(p, score)
  state, total = _state(decoder, p, src_mask_BS), 0.0
  for t in range(T):
    drop = (lambda i, v: v) if drop_TBH is None else (
        lambda i, v, t=t: v * drop_TBH[t])
    out_BH, state = decoder.step(decoder.project_tokens(x_BTF[:, t]), state,
                                 drop)
    total = total + (out_BH * w_TBH[t]).sum()
  return total


@pytest.mark.parametrize("score,rate", [
    ("general", 0.0), ("general", 0.3), ("dot", 0.3), ("scaled_dot", 0.0)])
def test_gradients_match_autodiff_of_the_step_loop(score, rate):
  p, x_BTF, src_mask_BS, w_TBH = _arrays(score)
  drop_TBH = _drop(rate)
  assert fed_decoder.serves(_decoder(p, score).with_joint_kernel())
  args = (x_BTF, src_mask_BS, w_TBH, drop_TBH, score)
  got = jax.jit(jax.value_and_grad(_scan_loss, argnums=(0, 1)),
                static_argnums=(5,))(p, *args)
  want = jax.jit(jax.value_and_grad(_loop_loss, argnums=(0, 1)),
                 static_argnums=(5,))(p, *args)
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
  for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got[1]),
                          jax.tree.leaves(want[1])):
    assert g.shape == w.shape
    np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5, err_msg=str(path))
  # Padded source positions and the token inputs of padded target steps
  # get exactly nothing.
  dvalues_BSM = np.asarray(got[1][0]["values"])
  assert not dvalues_BSM[~src_mask_BS].any()
  dx_BTF = np.asarray(got[1][1])
  assert not dx_BTF[np.arange(T)[None] >= TGT_LENGTHS[:, None]].any()
  assert dx_BTF[np.arange(T)[None] < TGT_LENGTHS[:, None]].any()


def _numpy_loss(p, x_BTF, src_mask_BS, w_TBH, drop_TBH):
  """The general score's decoder, a float64 NumPy step loop."""
  p = {k: np.float64(v) for k, v in p.items()}
  sigmoid = lambda z: 1.0 / (1.0 + np.exp(-z))
  keys_BSA = p["values"] @ p["key_kernel"]
  h, c, feed, total = p["h0"], p["c0"], p["feed0"], 0.0
  for t in range(T):
    z = np.concatenate([x_BTF[:, t], feed], -1) @ p["kernel"] + p["bias"]
    z = z + h @ p["recurrent_kernel"]
    i, f, g, o = np.split(z, 4, axis=-1)
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    h = sigmoid(o) * np.tanh(c)
    scores_BS = np.where(src_mask_BS, np.einsum("bh,bsh->bs", h, keys_BSA),
                         -np.inf)
    e_BS = np.exp(scores_BS - scores_BS.max(-1, keepdims=True))
    weights_BS = e_BS / e_BS.sum(-1, keepdims=True)
    context_BM = np.einsum("bs,bsm->bm", weights_BS, p["values"])
    feed = np.tanh(np.concatenate([context_BM, h], -1) @ p["combine"])
    if drop_TBH is not None:
      feed = feed * drop_TBH[t]
    total += (feed * w_TBH[t]).sum()
  return total


def test_directional_derivatives_match_numpy_central_differences():
  p, x_BTF, src_mask_BS, w_TBH = _arrays("general", seed=3)
  drop_TBH = _drop(0.3, seed=4)
  grads = jax.jit(jax.grad(_scan_loss), static_argnums=(5,))(
      p, x_BTF, src_mask_BS, w_TBH, drop_TBH, "general")
  rng = np.random.default_rng(5)
  x64 = np.float64(x_BTF)
  for _ in range(3):
    v = {k: rng.normal(size=a.shape) for k, a in p.items()}
    eps = 1e-5
    loss = lambda sign: _numpy_loss(
        {k: np.float64(a) + sign * eps * v[k] for k, a in p.items()}, x64,
        src_mask_BS, np.float64(w_TBH), drop_TBH)
    numeric = (loss(1) - loss(-1)) / (2 * eps)
    analytic = sum(float((np.float64(grads[k]) * v[k]).sum()) for k in p)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-4, atol=1e-4)


def test_outputs_equal_the_step_loop_undifferentiated():
  p, x_BTF, src_mask_BS, _ = _arrays("general", seed=6)
  drop_TBH = _drop(0.3)
  decoder = _decoder(p, "general")
  state = _state(decoder, p, src_mask_BS)
  xw_TBG = jnp.swapaxes(decoder.project_tokens(x_BTF), 0, 1)
  got_TBH = jax.jit(lambda xw: decoder.scan(xw, state, [drop_TBH]))(xw_TBG)
  fast, outs = decoder.with_joint_kernel(), []
  for t in range(T):
    out_BH, state = fast.step(xw_TBG[t], state, lambda i, v: v * drop_TBH[t])
    outs.append(out_BH)
  np.testing.assert_allclose(got_TBH, np.stack(outs), rtol=1e-6, atol=1e-6)


def test_serves_only_what_it_computes():
  p = _arrays("general")[0]
  fast = _decoder(p, "general").with_joint_kernel()
  assert fed_decoder.serves(fast)
  assert not fed_decoder.serves(_decoder(p, "general"))  # no joint kernel
  others = [
      fast.__class__(**{**fast.__dict__, "score": "concat"}),
      fast.__class__(**{**fast.__dict__, "feeds": False}),
      fast.__class__(**{**fast.__dict__, "dtype": jnp.bfloat16}),
      fast.__class__(**{**fast.__dict__, "layers": fast.layers * 2}),
      fast.__class__(**{**fast.__dict__, "layers": (
          fast.layers[0]._replace(update=gru_update),)})]
  assert not any(fed_decoder.serves(d) for d in others)


def test_gradients_under_vmap_match_each_members_step_loop():
  # Vectorized groups vmap the training step over members' parameters.
  p, x_BTF, src_mask_BS, w_TBH = _arrays("general", seed=7)
  drop_TBH = _drop(0.3)
  members = jax.tree.map(lambda a: np.stack([a, a * 0.9]), p)
  got = jax.jit(jax.vmap(jax.grad(_scan_loss), in_axes=(0,) + (None,) * 5),
                static_argnums=(5,))(members, x_BTF, src_mask_BS, w_TBH,
                                     drop_TBH, "general")
  loop_grad = jax.jit(jax.grad(_loop_loss), static_argnums=(5,))
  for k in range(2):
    want = loop_grad(jax.tree.map(lambda a: a[k], members), x_BTF,
                     src_mask_BS, w_TBH, drop_TBH, "general")
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(g[k], w, rtol=2e-5, atol=2e-5)
