"""The Keras ``lstm_seq2seq`` character-level translation model, as a peer.

Exactly the Keras example (keras.io/examples/nlp/lstm_seq2seq): one-hot
inputs over the input / output characters, ``LSTM(latent_dim,
return_state=True)`` encoder, ``LSTM(latent_dim, return_sequences=True,
return_state=True)`` decoder initialised with the encoder states, a softmax
``Dense``, RMSprop, categorical cross-entropy; padding is a one-hot space and
is trained on, as in the example. Inference uses the example's encoder /
decoder inference models with its greedy algorithm (start from ``\\t``, feed
back the argmax one-hot, stop at ``\\n`` or the maximum length), run on a
whole batch at once.

Differences, for a fair comparison with seqjax: the character sets are built
from the given training pairs (not from all pairs, as the example does, which
would leak held-out characters); a character not in them is an all-zero
one-hot row. Import this module with ``KERAS_BACKEND`` already set (the
benchmark sets ``jax``).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

START, END, PAD = "\t", "\n", " "


@dataclasses.dataclass
class CharTables:
  input_chars: list[str]
  target_chars: list[str]
  max_encoder_len: int
  max_decoder_len: int

  @property
  def input_index(self):
    return {c: i for i, c in enumerate(self.input_chars)}

  @property
  def target_index(self):
    return {c: i for i, c in enumerate(self.target_chars)}


def char_tables(train_pairs, all_pairs) -> CharTables:
  """Sorted character sets of the training pairs (targets wrapped in \\t,
  \\n; the space pads, as in the example); lengths over all pairs so every
  held-out sentence fits."""
  input_chars = set(PAD)
  target_chars = {START, END, PAD}
  for src, tgt in train_pairs:
    input_chars.update(src)
    target_chars.update(tgt)
  return CharTables(sorted(input_chars), sorted(target_chars),
                    max(len(s) for s, _ in all_pairs),
                    max(len(t) for _, t in all_pairs) + 2)


def one_hot_inputs(tables: CharTables, sources) -> np.ndarray:
  """(N, T_enc, input chars) float32; pad with spaces; unknown: zero row."""
  index = tables.input_index
  out = np.zeros((len(sources), tables.max_encoder_len,
                  len(tables.input_chars)), np.float32)
  for i, text in enumerate(sources):
    for t, ch in enumerate(text):
      if ch in index:
        out[i, t, index[ch]] = 1.0
    out[i, len(text):, index[PAD]] = 1.0
  return out


def input_ids(tables: CharTables, sources) -> np.ndarray:
  """(N, T_enc) int64 ids of ``one_hot_inputs``' hot entries (space-padded);
  every character must be in the tables (PyTorch's peer: its one-hot rows
  are looked up per batch)."""
  index = tables.input_index
  out = np.full((len(sources), tables.max_encoder_len), index[PAD], np.int64)
  for i, text in enumerate(sources):
    out[i, :len(text)] = [index[ch] for ch in text]
  return out


def target_ids(tables: CharTables, targets) -> tuple[np.ndarray, np.ndarray]:
  """-> (decoder_input, decoder_target) ids, (N, T_dec) int64 each: the hot
  entries of ``one_hot_targets`` (every character must be in the tables)."""
  index = tables.target_index
  shape = (len(targets), tables.max_decoder_len)
  dec_in = np.full(shape, index[PAD], np.int64)
  dec_target = np.full(shape, index[PAD], np.int64)
  for i, text in enumerate(targets):
    ids = [index[ch] for ch in START + text + END]
    dec_in[i, :len(ids)] = ids
    dec_target[i, :len(ids) - 1] = ids[1:]
  return dec_in, dec_target


def one_hot_targets(tables: CharTables, targets):
  """-> (decoder_input, decoder_target), each (N, T_dec, target chars): the
  example's teacher-forcing arrays, target one step ahead of the input."""
  index = tables.target_index
  shape = (len(targets), tables.max_decoder_len, len(tables.target_chars))
  dec_in, dec_target = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
  for i, text in enumerate(targets):
    text = START + text + END
    for t, ch in enumerate(text):
      if ch in index:
        dec_in[i, t, index[ch]] = 1.0
        if t > 0:
          dec_target[i, t - 1, index[ch]] = 1.0
    dec_in[i, len(text):, index[PAD]] = 1.0
    dec_target[i, len(text) - 1:, index[PAD]] = 1.0
  return dec_in, dec_target


def teacher_forced_accuracy(model, tables: CharTables, pairs,
                            batch_size: int = 256) -> float:
  """Held-out token accuracy with teacher forcing over each target's
  characters and its \\n (padding excluded; an unknown character counts as
  a miss), as seqjax's ``val_token_accuracy``."""
  enc_in = one_hot_inputs(tables, [s for s, _ in pairs])
  dec_in, _ = one_hot_targets(tables, [t for _, t in pairs])
  probs = model.predict([enc_in, dec_in], batch_size=batch_size, verbose=0)
  pred = np.argmax(probs, axis=-1)
  index = tables.target_index
  hits = total = 0
  for i, (_, text) in enumerate(pairs):
    for t, ch in enumerate(text + END):
      hits += int(index.get(ch, -1) == pred[i, t])
      total += 1
  return hits / total


def build_models(num_encoder_tokens: int, num_decoder_tokens: int,
                 latent_dim: int = 256):
  """-> (training model, encoder inference model, decoder inference model),
  the example's definitions: the same as the reverse tutorial's
  ``define_models``, compiled with RMSprop."""
  import keras  # noqa: F401  (imported first, with the caller's backend)
  from benchmarks.reverse_keras import define_models
  model, encoder_model, decoder_model = define_models(
      num_encoder_tokens, num_decoder_tokens, latent_dim)
  model.compile(optimizer="rmsprop", loss="categorical_crossentropy",
                metrics=["accuracy"])
  return model, encoder_model, decoder_model


def greedy_decode(encoder_model, decoder_model, tables: CharTables,
                  encoder_input: np.ndarray, batch_size: int = 256,
                  max_steps: int = 0, on_batch: bool = False,
                  early_stop: bool = True) -> list[str]:
  """The example's ``decode_sequence`` on a batch at a time: start from \\t,
  feed back the argmax one-hot, stop a sentence at \\n or after
  ``max_decoder_len`` steps (the example's own bound is about the same:
  ``len(decoded) > max_decoder_seq_length``). seqjax's decoder takes one step
  fewer (the longest target and its \\n), which matters only for a sentence
  that never stops; ``max_steps`` sets the bound. ``on_batch`` calls the
  models with ``predict_on_batch`` (Keras' lightest compiled call) instead of
  ``predict``. ``early_stop=False`` runs every batch for all the steps (the
  sentences still end at their \\n)."""
  steps = max_steps or tables.max_decoder_len
  if on_batch:
    encode, step = encoder_model.predict_on_batch, decoder_model.predict_on_batch
  else:
    encode = lambda x: encoder_model.predict(x, batch_size=len(x), verbose=0)
    step = lambda xs: decoder_model.predict(xs, batch_size=len(xs[0]),
                                            verbose=0)
  index, chars = tables.target_index, tables.target_chars
  n_tokens = len(chars)
  out = []
  for start in range(0, len(encoder_input), batch_size):
    batch = encoder_input[start:start + batch_size]
    n = len(batch)
    h, c = encode(batch)
    target_seq = np.zeros((n, 1, n_tokens), np.float32)
    target_seq[:, 0, index[START]] = 1.0
    decoded = [""] * n
    done = np.zeros(n, bool)
    for _ in range(steps):
      probs, h, c = step([target_seq, h, c])
      ids = np.argmax(np.asarray(probs)[:, -1, :], axis=-1)
      for i, k in enumerate(ids):
        if not done[i]:
          if chars[k] == END:
            done[i] = True
          else:
            decoded[i] += chars[k]
      if early_stop and done.all():
        break
      target_seq = np.zeros((n, 1, n_tokens), np.float32)
      target_seq[np.arange(n), 0, ids] = 1.0
    out.extend(decoded)
  return out


def train_and_decode(train_pairs, val_pairs, epochs: int, batch_size: int = 64,
                     latent_dim: int = 256, seed: int = 0,
                     log=print) -> dict:
  """Trains the peer on ``train_pairs`` and greedily decodes the sources of
  ``val_pairs``. -> {"hypotheses", "train_seconds", "samples_per_second",
  "history", "n_params"}."""
  import keras
  keras.utils.set_random_seed(seed)
  tables = char_tables(train_pairs, list(train_pairs) + list(val_pairs))
  enc_in = one_hot_inputs(tables, [s for s, _ in train_pairs])
  dec_in, dec_target = one_hot_targets(tables, [t for _, t in train_pairs])
  model, encoder_model, decoder_model = build_models(
      len(tables.input_chars), len(tables.target_chars), latent_dim)
  log(f"Keras peer: {len(tables.input_chars)} input chars, "
      f"{len(tables.target_chars)} target chars, encoder length "
      f"{tables.max_encoder_len}, decoder length {tables.max_decoder_len}, "
      f"{model.count_params()} parameters")
  epoch_seconds = []

  class Timer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
      self.t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
      epoch_seconds.append(time.perf_counter() - self.t0)
      log(f"Keras epoch {epoch + 1}/{epochs}: {epoch_seconds[-1]:.1f}s "
          f"loss {logs['loss']:.4f}", flush=True)

  t0 = time.perf_counter()
  history = model.fit([enc_in, dec_in], dec_target, batch_size=batch_size,
                      epochs=epochs, shuffle=True, verbose=0,
                      callbacks=[Timer()])
  train_seconds = time.perf_counter() - t0
  val_in = one_hot_inputs(tables, [s for s, _ in val_pairs])
  t0 = time.perf_counter()
  hypotheses = greedy_decode(encoder_model, decoder_model, tables, val_in)
  steady = epoch_seconds[1:] or epoch_seconds
  return {"hypotheses": hypotheses,
          "val_token_accuracy": teacher_forced_accuracy(model, tables,
                                                        val_pairs), "train_seconds": train_seconds,
          "decode_seconds": time.perf_counter() - t0,
          "epoch_seconds": epoch_seconds,
          # Steady epochs (the first compiles); the example's samples/epoch.
          "samples_per_second": len(train_pairs) / float(np.mean(steady)),
          "history": {k: [float(x) for x in v]
                      for k, v in history.history.items()},
          "n_params": int(model.count_params())}
