"""Bidirectional and stacked encoders and decoders: the backward direction
against each sentence reversed by hand to its own length, padding against no
padding, and stacks against their layers called one by one."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.models import ModelSettings, Seq2Seq, reverse_by_length
from seqjax.recurrent import make_recurrent
from tests import reference
from tests import seq2seq_reference as ref
from tests import tiers

V, H, S, T = 9, 6, 7, 4
LENGTHS = np.array([7, 3, 1, 5])
MASK_BS = np.arange(S)[None] < LENGTHS[:, None]


def _data(seed=0, src_len=S):
  rng = np.random.default_rng(seed)
  # Padding holds other tokens than 0, so only the mask can hide it.
  src_BS = rng.integers(1, V, size=(len(LENGTHS), src_len)).astype(np.int32)
  dec_in_BT = rng.integers(0, V, size=(len(LENGTHS), T)).astype(np.int32)
  return src_BS, dec_in_BT


def _init(model):
  src_BS, dec_in_BT = _data()
  return ref.random_params(model, src_BS[:1], dec_in_BT[:1])


def _encoder(model, params, src_BS, mask_BS):
  """The encoder's top outputs and every layer's final carries."""
  return model.apply(params, src_BS, mask_BS,
                     method=lambda m, s, k: m._encode_layers(s, k))


def test_reverse_by_length_reverses_each_row_to_its_length():
  src_BS, _ = _data()
  got = np.asarray(reverse_by_length(src_BS, LENGTHS))
  for b, L in enumerate(LENGTHS):
    np.testing.assert_array_equal(got[b], np.r_[src_BS[b, :L][::-1],
                                                src_BS[b, L:]])
  x_BSF = np.random.default_rng(1).normal(size=(len(LENGTHS), S, 3)).astype(
      np.float32)
  got = np.asarray(reverse_by_length(x_BSF, LENGTHS))
  for b, L in enumerate(LENGTHS):
    np.testing.assert_array_equal(got[b, :L], x_BSF[b, :L][::-1])
    np.testing.assert_array_equal(got[b, L:], x_BSF[b, L:])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("embedding_dim", [None, 4])
def test_backward_direction_runs_over_each_sentence_reversed_by_hand(
    cell, embedding_dim):
  model = Seq2Seq(src_vocab=V, tgt_vocab=V,
                  settings=ModelSettings(units=H, cell=cell,
                                         embedding_dim=embedding_dim,
                                         bidirectional=True))
  params = _init(model)
  p = params["params"]
  src_BS, _ = _data()
  out_BSM, finals = _encoder(model, params, src_BS, MASK_BS)
  x_BSF = ref.inputs_numpy(p, src_BS, V,
                           None if embedding_dim is None else "src_embedding")
  forward_BSH, forward = ref.layer_numpy(cell, p["encoder"], x_BSF,
                                         mask_BT=MASK_BS)
  # By hand, one sentence at a time: its real tokens reversed, from zeros.
  for b, L in enumerate(LENGTHS):
    rev_1LF = x_BSF[b:b + 1, :L][:, ::-1]
    back_1LH, back = ref.layer_numpy(cell, p["encoder_backward"], rev_1LF)
    np.testing.assert_allclose(out_BSM[b, :L, H:], back_1LH[0, ::-1],
                               atol=1e-5)
    np.testing.assert_allclose(out_BSM[b, :L, :H], forward_BSH[b, :L],
                               atol=1e-5)
    assert len(finals) == 2  # forward, backward
    for got, want in zip(finals[1], back):
      np.testing.assert_allclose(got[b], want[0], atol=1e-5)
    for got, want in zip(finals[0], forward):
      np.testing.assert_allclose(got[b], want[b], atol=1e-5)
  # The padding holds tokens that would matter: the whole row reversed,
  # padding first, ends elsewhere.
  _, whole = ref.layer_numpy(cell, p["encoder_backward"], x_BSF[:, ::-1])
  assert np.abs(np.asarray(finals[1][0])[1] - whole[0][1]).max() > 1e-3


@pytest.mark.parametrize("cell", tiers.tiered(["lstm", "gru"], {1}, str))
def test_padding_after_the_tokens_changes_no_encoder_output(cell):
  model = Seq2Seq(src_vocab=V, tgt_vocab=V,
                  settings=ModelSettings(units=H, cell=cell, encoder_layers=2,
                                         bidirectional=True,
                                         attention="luong"))
  params = _init(model)
  src_BS, _ = _data()
  out_BSM, finals = _encoder(model, params, src_BS, MASK_BS)
  # The same sentences, 5 more steps of other junk behind them.
  wide_BS, _ = _data(seed=3, src_len=S + 5)
  wide_BS[:, :S] = np.where(MASK_BS, src_BS, wide_BS[:, :S])
  wide_mask_BS = np.arange(S + 5)[None] < LENGTHS[:, None]
  wide_out_BSM, wide_finals = _encoder(model, params, wide_BS, wide_mask_BS)
  for b, L in enumerate(LENGTHS):
    np.testing.assert_allclose(wide_out_BSM[b, :L], out_BSM[b, :L],
                               atol=1e-6)
  for got, want in zip(jax.tree.leaves(wide_finals), jax.tree.leaves(finals)):
    np.testing.assert_allclose(got, want, atol=1e-6)
  # And unpadded sentences on their own: the same again.
  for b, L in list(enumerate(LENGTHS))[1:3]:
    one_out, one_finals = _encoder(model, params, src_BS[b:b + 1, :L], None)
    np.testing.assert_allclose(one_out[0], out_BSM[b, :L], atol=1e-5)
    for got, want in zip(jax.tree.leaves(one_finals),
                         jax.tree.leaves(finals)):
      np.testing.assert_allclose(got[0], want[b], atol=1e-5)


def _layer(cell, p, x, carry=None, mask=None):
  """One seqjax recurrent layer called on its own with the model's arrays."""
  layer = make_recurrent(cell, units=H, in_features=p["kernel"].shape[0])
  return layer.apply({"params": p}, x, carry, mask)


STACKS = [("lstm", 3, 3, False), ("gru", 2, 2, False), ("lstm", 2, 3, False),
          ("gru", 2, 2, True), ("lstm", 1, 2, True)]


# The fast tier: three layers each side, a bridge (2 to 3) and a
# bidirectional GRU; the full tier adds the other two.
@pytest.mark.parametrize("cell,enc,dec,bidirectional", tiers.tiered(
    STACKS, {0, 2, 3}, lambda c: "-".join(map(str, c)), unpack=True))
def test_stacked_layers_equal_the_layers_called_one_by_one(
    cell, enc, dec, bidirectional):
  model = Seq2Seq(src_vocab=V, tgt_vocab=V,
                  settings=ModelSettings(units=H, cell=cell,
                                         encoder_layers=enc,
                                         decoder_layers=dec,
                                         bidirectional=bidirectional))
  params = _init(model)
  p = params["params"]
  src_BS, dec_in_BT = _data()
  got = model.apply(params, src_BS, dec_in_BT, MASK_BS)
  x, finals = src_BS, []
  for i in range(enc):
    suffix = "" if i == 0 else f"_{i}"
    out, carry = _layer(cell, p["encoder" + suffix], x, mask=MASK_BS)
    finals.append(carry)
    if bidirectional:  # each sentence on its own, reversed
      back_BSH = np.zeros(out.shape, np.float32)
      backs = []
      for b, L in enumerate(LENGTHS):
        row = x[b:b + 1, :L][:, ::-1]
        o, c = _layer(cell, p["encoder_backward" + suffix], row)
        back_BSH[b, :L] = o[0, ::-1]
        backs.append(c)
      finals.append(tuple(jnp.concatenate(c) for c in zip(*backs)))
      out = jnp.concatenate([out, back_BSH], axis=-1)
    x = out
  if bidirectional or enc != dec:  # the bridge: tanh(Dense(all finals))
    starts = []
    for k in range(len(finals[0])):
      both = jnp.concatenate([f[k] for f in finals], axis=-1)
      y = jnp.tanh(nn.Dense(dec * H).apply({"params": p[f"bridge_{k}"]},
                                           both))
      starts.append(jnp.split(y, dec, axis=-1))
    carries = [tuple(s[i] for s in starts) for i in range(dec)]
  else:
    carries = finals
  y = dec_in_BT
  for i in range(dec):
    y, _ = _layer(cell, p["decoder" if i == 0 else f"decoder_{i}"], y,
                  carries[i])
  want = nn.Dense(V).apply({"params": p["readout"]}, y)
  np.testing.assert_allclose(got, want, atol=1e-5)
  # And the NumPy model (float64, the papers' equations) agrees.
  np.testing.assert_allclose(got, ref.seq2seq_numpy(model, params, src_BS,
                                                    dec_in_BT, LENGTHS),
                             atol=1e-4)


def test_one_layer_defaults_are_the_tutorial_model():
  # The defaults keep the tutorial's parameters: no bridge, no attention.
  params = _init(Seq2Seq(src_vocab=V, tgt_vocab=V,
                         settings=ModelSettings(units=H)))
  assert set(params["params"]) == {"encoder", "decoder", "readout"}
  model = Seq2Seq(src_vocab=V, tgt_vocab=V, settings=ModelSettings(units=H))
  src_BS, dec_in_BT = _data()
  p = params["params"]
  _, h, c = reference.lstm_numpy(p["encoder"], reference.one_hot(src_BS, V),
                                 mask_BT=MASK_BS)
  out, _, _ = reference.lstm_numpy(p["decoder"],
                                   reference.one_hot(dec_in_BT, V), h, c)
  np.testing.assert_allclose(model.apply(params, src_BS, dec_in_BT, MASK_BS),
                             reference.dense_numpy(p["readout"], out),
                             atol=1e-5)


def _param_shapes(model):
  src_BS, dec_in_BT = _data()
  shapes = jax.eval_shape(model.init, jax.random.key(0), src_BS[:1],
                          dec_in_BT[:1])["params"]
  return {"/".join(k.key for k in path): leaf.shape for path, leaf
          in jax.tree_util.tree_flatten_with_path(shapes)[0]}


@pytest.mark.parametrize("attention,score,extra_in,attention_params", [
    ("luong", "general", H, {"key_kernel": (2 * H, H)}),
    ("luong", "concat", H, {"kernel": (3 * H, H), "v": (H,)}),
    ("bahdanau", "general", 2 * H, {"key_kernel": (2 * H, H),
                                    "query_kernel": (H, H), "v": (H,)}),
])
def test_parameter_names_and_shapes_are_the_checkpoints(
    attention, score, extra_in, attention_params):
  """The flat names checkpoints hold: each layer where the tutorial model
  has it, stacks and directions beside it, the score's own parameters under
  "attention"."""
  E, G = 3, 4 * H  # embedding width, LSTM gates
  model = Seq2Seq(src_vocab=V, tgt_vocab=V,
                  settings=ModelSettings(units=H, embedding_dim=E,
                                         encoder_layers=2, decoder_layers=2,
                                         bidirectional=True,
                                         attention=attention,
                                         attention_score=score))
  lstm = lambda f: {"kernel": (f, G), "recurrent_kernel": (H, G),
                    "bias": (G,)}
  layers = {"encoder": lstm(E), "encoder_backward": lstm(E),
            "encoder_1": lstm(2 * H), "encoder_backward_1": lstm(2 * H),
            "decoder": lstm(E + extra_in), "decoder_1": lstm(H),
            "bridge_0": {"kernel": (4 * H, 2 * H), "bias": (2 * H,)},
            "bridge_1": {"kernel": (4 * H, 2 * H), "bias": (2 * H,)},
            "attention": attention_params,
            "readout": {"kernel": (H, V), "bias": (V,)},
            "src_embedding": {"embedding": (V, E)},
            "tgt_embedding": {"embedding": (V, E)}}
  want = {f"{layer}/{name}": shape for layer, named in layers.items()
          for name, shape in named.items()}
  want["combine"] = (3 * H, H)
  assert _param_shapes(model) == want
