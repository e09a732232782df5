"""The decode benchmark workload's PyTorch peer on the tiny setting (a
random model, random sentences).

Speed is measured by ``python -m benchmarks.run --workload=decode``, never
here; these tests check what it measures: that the PyTorch peer's decoder
step is seqjax's, that PyTorch's greedy and batched beam search give
seqjax's tokens and step counts, and a tiny end-to-end run with its tables.
"""

import dataclasses
import importlib.util
import json

import numpy as np
import pytest

from benchmarks import decode
from benchmarks import report
from benchmarks import run as bench_run
from seqjax.errors import ParameterError

# The workload's default (the translate attention model's architecture)
# and the other decoder kinds the PyTorch step has.
CONFIGS = [{}, {"cell": "gru", "attention": "bahdanau"},
           {"attention": "none"},
           {"cell": "gru", "bidirectional": False, "attention_score": "dot",
            "input_feeding": False}]
IDS = lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default"


def _torch():
  if importlib.util.find_spec("torch") is None:
    pytest.skip("torch is not installed (pip install -e '.[bench]')")
  import torch  # pylint: disable=g-import-not-at-top
  return torch


def _workload(**kw):
  return decode.Workload(decode.Settings(tiny=True, batches="5/7", **kw))


@pytest.mark.full
@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_torch_decoder_steps_compute_seqjax_steps(config):
  # The same logits at every step, fed the same tokens from the same
  # encoding: the wiring of encode + step, not only of the whole model.
  torch = _torch()
  import jax  # pylint: disable=g-import-not-at-top
  from seqjax.models import Seq2Seq  # pylint: disable=g-import-not-at-top
  w = _workload(**config)
  r = w.runner("torch")
  src, mask = w.src_NS[:6], w.mask_NS[:6]
  assert len(set(mask.sum(1))) > 2  # padding to mask
  state_j = w.model.apply(w.params, src, mask,
                          method=Seq2Seq.encode_for_decoding)
  step_j = jax.jit(lambda tok, st: w.model.apply(
      w.params, tok, st, method=Seq2Seq.decode_step))
  lengths = mask.sum(1)
  with torch.inference_mode():
    state_t = r.model.start_decoding(
        torch.from_numpy(src[:, :lengths.max()].astype(np.int64)),
        torch.from_numpy(lengths.astype(np.int64)),
        torch.from_numpy(mask[:, :lengths.max()].copy()))
    tokens = np.random.default_rng(0).integers(0, w.tgt_vocab, (4, 6))
    for tok in tokens.astype(np.int32):
      logits_j, state_j = step_j(tok, state_j)
      logits_t, state_t = r.model.decode_step(torch.from_numpy(
          tok.astype(np.int64)), state_t)
      assert np.asarray(logits_j).std() > 0.1  # not a flat output
      np.testing.assert_allclose(logits_t.numpy(), np.asarray(logits_j),
                                 rtol=1e-4, atol=1e-5)


@pytest.mark.full
@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_torch_greedy_and_beam_give_seqjax_tokens(config):
  _torch()
  w = _workload(**config)
  ours, theirs = w.runner("seqjax"), w.runner("torch")
  lengths = set()
  for key in decode.keys(w.s):
    decoder, batch = key.split("@")
    tokens_j, steps_j, rows_j = ours.decode(decoder, int(batch))
    # seqjax's in-flight greedy (its own loop) against PyTorch's greedy.
    peer = decoder.removesuffix("_inflight")
    tokens_t, steps_t, rows_t = theirs.decode(peer, int(batch))
    np.testing.assert_array_equal(tokens_t, tokens_j, err_msg=key)
    # Both stop at the same step; PyTorch steps fewer rows (it drops the
    # finished sentences, seqjax pads its last batch).
    if peer == decoder:
      assert steps_t == steps_j and rows_t < rows_j, key
    lengths |= set(decode.output_lengths(tokens_j).tolist())
  # The tiny model's outputs end at varied steps, some at max_len: every
  # finishing path is exercised.
  assert len(lengths) >= 3 and w.max_len in lengths, lengths


@pytest.mark.full
@pytest.mark.parametrize("config", CONFIGS[:2], ids=IDS)
def test_equal_work_torch_gives_seqjax_tokens_in_steps_steps(config):
  # No stop symbol: every sentence runs `steps` steps in both frameworks.
  _torch()
  w = _workload(steps=6, **config)
  ours, theirs = w.runner("seqjax"), w.runner("torch")
  for key in decode.keys(w.s):
    decoder, batch = key.split("@")
    tokens_j, steps_j, _ = ours.decode(decoder, int(batch))
    peer = decoder.removesuffix("_inflight")
    tokens_t, steps_t, _ = theirs.decode(peer, int(batch))
    np.testing.assert_array_equal(tokens_t, tokens_j, err_msg=key)
    assert tokens_j.shape == (len(w.src_NS), 6)
    if peer == decoder:
      assert steps_t == steps_j == 6 * len(w.batches(int(batch))), key


@pytest.mark.full
def test_torch_beam_of_one_without_penalty_is_torch_greedy():
  torch = _torch()
  from benchmarks import decode_torch  # pylint: disable=g-import-not-at-top
  w = _workload()
  r = w.runner("torch")
  batch = r._batch(0, 12)
  want, _, _ = decode_torch.greedy(r.model, *batch, max_len=w.max_len)
  got, _, _ = decode_torch.beam_search(r.model, *batch, k=1, max_len=w.max_len,
                                     alpha=0.0)
  assert isinstance(got, torch.Tensor)
  np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_bad_batch_sizes_are_named():
  for text in ("50,256", "0", ""):
    with pytest.raises(ParameterError) as e:
      decode.Settings(batches=text).batch_sizes()
    assert e.value.param == "batches"
  assert decode.Settings(batches="50/256").batch_sizes() == [50, 256]


def test_a_random_model_needs_equal_work():
  # Its outputs would have random lengths: refused before any data is read.
  with pytest.raises(ParameterError) as e:
    decode.Workload(decode.Settings(data_path="/no/such/file"))
  assert e.value.param == "steps"


@pytest.mark.full
def test_tiny_run_writes_its_tables(tmp_path):
  _torch()
  path = tmp_path / "decode.json"
  out = bench_run.run(bench_run.BenchmarkConfig(
      workload="decode", peers="torch", reps=2, json=str(path),
      single_thread=True, settings="tiny=true,batches=5/7,passes=1"))
  on_disk = json.loads(path.read_text())
  entry = on_disk["workloads"]["decode"]
  assert entry["kind"] == "decode" and entry["single_thread"] is True
  assert entry["results"].keys() == {"seqjax", "torch"}
  for fw in ("seqjax", "torch"):
    res = entry["results"][fw]
    assert sorted(res["median"]) == sorted(decode.keys(
        decode.Settings(batches="5/7"), fw))
    for runs in res["reps"].values():
      assert len(runs["sentences_per_s"]) == 2
    assert all(res["same_tokens_every_rep"].values())
  # seqjax's first calls compile (once per decoder and batch size), then
  # nothing: the timed passes reuse them.
  warm = entry["results"]["seqjax"]["warmup"]
  assert all(w["compiles"] >= 1 for w in warm.values())
  agree = entry["agreement"]
  assert agree["seqjax vs torch beam5@5"] == 1.0
  assert agree["seqjax vs torch greedy@7"] == 1.0
  metrics = {(r["metric"], r["batch"]) for r in entry["ratios"]}
  assert ("seqjax beam / torch beam (sentences/s)", 7) in metrics
  assert ("seqjax beam time / seqjax greedy time", 5) in metrics
  text = report.markdown(on_disk)
  assert "| decoder | batch | seqjax | torch |" in text
  assert "| sentences/s: beam5 | 7 |" in text
  assert out["workloads"]["decode"]["model"]["tiny"] is True
  settings = dataclasses.asdict(decode.Settings())
  assert entry["settings"]["length_penalty"] == settings["length_penalty"]
