"""The held-out loss: averaged over real target tokens, the last batch padded
with masked rows, against a NumPy computation over all rows at once."""

from seqjax.evaluate import evaluate_loss

import jax
import numpy as np

from seqjax import train as train_lib
from seqjax.models import ModelSettings, Seq2Seq

V, S, T, N = 9, 4, 5, 7


def _arrays():
  rng = np.random.default_rng(0)
  lengths = np.array([1, 5, 2, 4, 3, 5, 1])  # rows weigh unequally
  mask = np.arange(T)[None] < lengths[:, None]
  target = rng.integers(1, V, (N, T)).astype(np.int32) * mask
  dec_in = np.concatenate([np.ones((N, 1), np.int32), target[:, :-1]], 1)
  return {"src": rng.integers(1, V, (N, S)).astype(np.int32),
          "src_mask": np.ones((N, S), bool), "dec_in": dec_in,
          "target": target, "target_mask": mask}


def _reference(model, params, a):
  """Per-token cross-entropy and argmax hits over every real token."""
  logits = np.asarray(model.apply(params, a["src"], a["dec_in"],
                                  a["src_mask"], a["target_mask"]),
                      np.float64)
  logp = logits - logits.max(-1, keepdims=True)
  logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
  nll = -np.take_along_axis(logp, a["target"][..., None], -1)[..., 0]
  hits = logits.argmax(-1) == a["target"]
  m = a["target_mask"]
  return nll[m].mean(), hits[m].mean()


def test_token_weighted_loss_with_a_padded_last_batch():
  model = Seq2Seq(src_vocab=V, tgt_vocab=V, settings=ModelSettings(units=8))
  a = _arrays()
  params = model.init(jax.random.key(0), a["src"][:1], a["dec_in"][:1])
  eval_step = train_lib.make_eval_step(train_lib.make_seq2seq_loss(model))
  loss, acc = _reference(model, params, a)
  for batch_size in (3, 10):  # 7 rows: the last batch short (1 of 3; 7 of 10)
    got = evaluate_loss(eval_step, params, a, batch_size)
    np.testing.assert_allclose(got["loss"], loss, rtol=1e-5)
    np.testing.assert_allclose(got["token_accuracy"], acc, rtol=1e-5)
