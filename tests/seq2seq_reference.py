"""Independent NumPy references for the attention model, written from the
papers' formulas, step by step, in float64 (no seqjax code runs here).

* Bahdanau et al. 2015: ``e_ij = v_a^T tanh(W_a s_{i-1} + U_a h_j)``, the
  context ``c_i = sum_j a_ij h_j`` an input of the decoder step, and the
  readout from the new state and that same context (seqjax's combine layer
  ``tanh(W_c [c_i; s_i])``, as Luong's attentional state).
* Luong et al. 2015: ``score(h_t, h_s) = h_t^T h_s`` (dot),
  ``h_t^T W_a h_s`` (general) or ``v_a^T tanh(W_a [h_t; h_s])`` (concat) on
  the new state ``h_t``; the attentional state ``h~_t = tanh(W_c [c_t;
  h_t])`` is read out and, with input feeding, concatenated to the next
  step's input. Vaswani et al. 2017's scaled dot product ``h_t^T h_s /
  sqrt(d)`` (scaled_dot) and Bahdanau's additive score serve Luong too.

The Flax arrays are the transposed maps (``x @ kernel``): ``W_a`` of the
papers is ``kernel.T``. Sentences of the backward encoder are reversed one
by one to their own length, with Python slicing.
"""

import jax
import jax.numpy as jnp
import numpy as np

from tests import reference


def random_params(model, src_BS, dec_in_BT, seed=0):
  """Random parameters of a model's shapes (``jax.eval_shape``: no init to
  run, so cheap), larger than initialised so that the attention is far from
  uniform and comparisons are sharp; small biases, so the inputs decide."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), src_BS, dec_in_BT)
  rng = np.random.default_rng(seed)

  def draw(path, s):
    if path[-1].key == "bias":
      scale = 0.1
    else:  # kernels (fan-in first), embeddings and Bahdanau's v
      scale = (6.0 if path[1].key == "attention" else 2.5) * s.shape[0] ** -0.5
    return jnp.asarray(rng.normal(size=s.shape) * scale, s.dtype)
  return jax.tree_util.tree_map_with_path(draw, shapes)


def _f64(x):
  return np.asarray(x, np.float64)


def score_numpy(arrays, name, q, h):
  """One score of a query ``q`` (H,) against a memory row ``h`` (M,)."""
  if name == "dot":
    return q @ h
  if name == "scaled_dot":
    return q @ h / np.sqrt(q.shape[0])
  if name == "general":
    return q @ _f64(arrays["key_kernel"]).T @ h  # W_a (H, M)
  if name == "additive":
    W_a = _f64(arrays["query_kernel"]).T
    U_a = _f64(arrays["key_kernel"]).T
    return _f64(arrays["v"]) @ np.tanh(W_a @ q + U_a @ h)
  assert name == "concat", name
  W_a = _f64(arrays["kernel"]).T  # (A, H + M), acting on [h_t; h_s]
  return _f64(arrays["v"]) @ np.tanh(W_a @ np.concatenate([q, h]))


def scores_numpy(arrays, kind, score, query_BXH, memory_BSM):
  """Scores (B, S) for a query (B, H) or (B, T, S) for queries (B, T, H)."""
  single = query_BXH.ndim == 2
  q_BTH = _f64(query_BXH)[:, None] if single else _f64(query_BXH)
  h_BSM = _f64(memory_BSM)
  B, T, _ = q_BTH.shape
  S = h_BSM.shape[1]
  e_BTS = np.zeros((B, T, S))
  name = "additive" if kind == "bahdanau" else score
  for b in range(B):
    for t in range(T):
      for j in range(S):
        q, h = q_BTH[b, t], h_BSM[b, j]
        e_BTS[b, t, j] = score_numpy(arrays, name, q, h)
  return e_BTS[:, 0] if single else e_BTS


def attend_numpy(arrays, kind, score, query_BXH, memory_BSM, mask_BS):
  """-> (context, weights): a softmax over each row's real positions only
  (the padded ones are left out of the sum and get weight 0)."""
  e = scores_numpy(arrays, kind, score, query_BXH, memory_BSM)
  single = e.ndim == 2
  e_BTS = e[:, None] if single else e
  w_BTS = np.zeros_like(e_BTS)
  for b in range(e_BTS.shape[0]):
    real = np.flatnonzero(mask_BS[b])
    for t in range(e_BTS.shape[1]):
      x = np.exp(e_BTS[b, t, real] - e_BTS[b, t, real].max())
      w_BTS[b, t, real] = x / x.sum()
  c_BTM = np.einsum("bts,bsm->btm", w_BTS, _f64(memory_BSM))
  if single:
    return c_BTM[:, 0], w_BTS[:, 0]
  return c_BTM, w_BTS


def layer_numpy(cell, p, x_BTF, carry=None, mask_BT=None):
  """One recurrent layer -> (outputs (B, T, H), final carry tuple)."""
  if cell == "lstm":
    h0, c0 = (None, None) if carry is None else carry
    out, h, c = reference.lstm_numpy(p, x_BTF, h0, c0, mask_BT)
    return out, (h, c)
  out, h = reference.gru_numpy(p, x_BTF, None if carry is None else carry[0],
                               mask_BT)
  return out, (h,)


def _name(base, i):
  return base if i == 0 else f"{base}_{i}"


def inputs_numpy(p, ids_BT, vocab, embedding):
  if embedding is None:
    return reference.one_hot(ids_BT, vocab)
  return _f64(p[embedding]["embedding"])[ids_BT]


def backward_numpy(cell, p, x_BSF, lengths_B):
  """The backward direction by hand: each sentence's real steps reversed,
  run from a zero carry, its outputs put back in source order (zeros on
  padding) -> (outputs (B, S, H), final carries per row stacked)."""
  B, S, _ = x_BSF.shape
  H = _f64(p["recurrent_kernel"]).shape[0]
  out_BSH = np.zeros((B, S, H))
  finals = []
  for b in range(B):
    L = int(lengths_B[b])
    o, carry = layer_numpy(cell, p, x_BSF[b:b + 1, :L][:, ::-1])
    out_BSH[b, :L] = o[0, ::-1]
    finals.append(carry)
  return out_BSH, tuple(np.concatenate([c[k] for c in finals])
                        for k in range(len(finals[0])))


def encoder_numpy(cell, p, x_BSF, lengths_B, layers, bidirectional):
  """-> top outputs (B, S, M) (zeros on padding), finals in layer order
  (forward, then backward when bidirectional)."""
  S = x_BSF.shape[1]
  mask_BS = np.arange(S)[None] < lengths_B[:, None]
  finals = []
  x = x_BSF
  for i in range(layers):
    out, carry = layer_numpy(cell, p[_name("encoder", i)], x, mask_BT=mask_BS)
    out = np.where(mask_BS[..., None], out, 0.0)
    finals.append(carry)
    if bidirectional:
      back, carry = backward_numpy(cell, p[_name("encoder_backward", i)], x,
                                   lengths_B)
      out = np.concatenate([out, back], axis=-1)
      finals.append(carry)
    x = out
  return x, finals


def bridge_numpy(p, finals, decoder_layers, carry_size):
  """Each carry component of every encoder layer concatenated, through
  ``tanh(Dense)``, split into the decoder layers' start carries."""
  starts = []
  for k in range(carry_size):
    x = np.concatenate([f[k] for f in finals], axis=-1)
    y = np.tanh(reference.dense_numpy(p[f"bridge_{k}"], x))
    starts.append(np.split(y, decoder_layers, axis=-1))
  return [tuple(starts[k][i] for k in range(carry_size))
          for i in range(decoder_layers)]


def seq2seq_numpy(model, params, src_BS, dec_in_BT, lengths_B):
  """Teacher-forced logits (B, T, V) of a ``Seq2Seq``'s architecture."""
  p, arch = params["params"], model.settings
  emb = arch.embedding_dim
  cell, H = arch.cell, arch.units
  carry_size = 2 if cell == "lstm" else 1
  x_BSF = inputs_numpy(p, src_BS, model.src_vocab,
                       None if emb is None else "src_embedding")
  memory_BSM, finals = encoder_numpy(cell, p, x_BSF, lengths_B,
                                     arch.encoder_layers, arch.bidirectional)
  if arch.bidirectional or arch.encoder_layers != arch.decoder_layers:
    carries = bridge_numpy(p, finals, arch.decoder_layers, carry_size)
  else:
    carries = list(finals)
  mask_BS = np.arange(src_BS.shape[1])[None] < lengths_B[:, None]
  kind, score = arch.attention, arch.attention_score
  arrays = p.get("attention", {})
  feeds = kind == "luong" and arch.input_feeding
  y_BTF = inputs_numpy(p, dec_in_BT, model.tgt_vocab,
                       None if emb is None else "tgt_embedding")
  B, T = dec_in_BT.shape
  feed_BH = np.zeros((B, H))
  logits = []
  for t in range(T):
    x = y_BTF[:, t]
    if kind == "bahdanau":  # the context from the previous state s_{t-1}
      context, _ = attend_numpy(arrays, kind, score, carries[-1][0],
                                memory_BSM, mask_BS)
      x = np.concatenate([x, context], axis=-1)
    elif feeds:
      x = np.concatenate([x, feed_BH], axis=-1)
    for i in range(arch.decoder_layers):
      out, carries[i] = layer_numpy(cell, p[_name("decoder", i)], x[:, None],
                                    carries[i])
      x = out[:, 0]
    if kind == "luong":  # attend from the new state h_t
      context, _ = attend_numpy(arrays, kind, score, x, memory_BSM, mask_BS)
    if kind != "none":  # h~_t = tanh(W_c [c_t; h_t])
      x = np.tanh(np.concatenate([context, x], axis=-1) @ _f64(p["combine"]))
      feed_BH = x
    logits.append(reference.dense_numpy(p["readout"], x))
  return np.stack(logits, axis=1)
