"""The decode workload's OpenNMT-py peer on the tiny setting.

Speed is measured by ``python -m benchmarks.run --workload=decode``,
never here; these tests check what it measures: that OpenNMT-py's model has
the sizes asked for (its parameters counted from the sizes by hand), that
its searches run the equal work (every sentence ``steps`` steps, the end
token never emitted), that its greedy search is the argmax of its own model
(a step loop written here over its modules), and a tiny end-to-end run.
OpenNMT-py is benchmark-only: without it these tests skip.
"""

import dataclasses
import importlib.util
import json

import numpy as np
import pytest

from benchmarks import decode
from benchmarks import decode_onmt
from benchmarks import report
from benchmarks import run as bench_run

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None
        for m in ("onmt", "pyonmttok", "configargparse")),
    reason="OpenNMT-py is not installed (benchmark-only: pip install "
           "--no-deps OpenNMT-py==3.5.1 configargparse six pyonmttok)")
pytestmark = [pytest.mark.full, pytestmark]

TINY = dict(tiny=True, steps=5, batches="4", onmt_hidden="8",
            tiny_units=8)
ONMT_EOS, ONMT_PAD = 3, 1


@pytest.fixture(scope="module")
def workload():
  return decode.Workload(decode.Settings(**TINY))


@pytest.fixture(scope="module")
def onmt_runner(workload):
  return decode_onmt.Runner(workload, 8)


def lstm_parameters(inputs: int, units: int) -> int:
  """PyTorch's LSTM / LSTMCell: four gates, input and hidden weights, two
  biases."""
  return 4 * units * (inputs + units + 2)


def test_onmt_model_has_the_workload_sizes(workload):
  for hidden in (8, 16):
    runner = decode_onmt.Runner(workload, hidden)
    e, h = workload.arch["embedding_dim"], hidden
    vs, vt = workload.src_vocab, workload.tgt_vocab
    expected = (vs * e + vt * e                       # embeddings
                + 2 * lstm_parameters(e, h // 2)      # brnn: h/2 a direction
                + lstm_parameters(e + h, h)           # input feeding
                + h * h + 2 * h * h                   # general score, output
                + h * vt + vt)                        # generator
    assert runner.parameters == expected
    assert len(runner.vocabs["src"]) == vs
    assert len(runner.vocabs["tgt"]) == vt


@pytest.mark.parametrize("decoder", ["greedy", "beam5"])
def test_onmt_equal_work_runs_every_step(workload, onmt_runner, decoder):
  tokens, steps, rows = onmt_runner.decode(decoder, 4)
  batches = len(workload.batches(4))
  assert steps == workload.s.steps * batches
  k = 1 if decoder == "greedy" else 5
  assert rows == workload.s.steps * len(workload.src_NS) * k
  assert tokens.shape == (len(workload.src_NS), workload.s.steps)
  assert not np.isin(tokens, [ONMT_EOS, ONMT_PAD]).any()


def test_onmt_natural_stops_no_later(workload, onmt_runner):
  _, steps, _ = onmt_runner.decode("beam5_natural", 4)
  assert steps <= workload.s.steps * len(workload.batches(4))


def test_onmt_greedy_is_its_models_argmax(workload, onmt_runner):
  """OpenNMT-py's GreedySearch (topk 1, end blocked) against an argmax loop
  over its encoder, decoder and generator."""
  import torch
  model, start, stop = onmt_runner.model, *workload.batches(4)[0]
  batch = onmt_runner._batch(start, stop)  # pylint: disable=protected-access
  with torch.no_grad():
    enc_out, enc_final, src_len = model.encoder(batch["src"],
                                                batch["srclen"])
    model.decoder.init_state(batch["src"], enc_out, enc_final)
    token = torch.full((stop - start, 1, 1), 2)  # OpenNMT-py's bos
    out = []
    for step in range(workload.s.steps):
      dec_out, _ = model.decoder(token, enc_out, src_len=src_len, step=step)
      logp = torch.log_softmax(model.generator(dec_out.squeeze(1)), -1)
      logp[:, ONMT_EOS] = -65504  # min_length: the end blocked
      token = logp.argmax(-1).view(-1, 1, 1)
      out.append(token.view(-1))
  expected = torch.stack(out, 1).numpy()
  tokens, _, _ = onmt_runner.decode("greedy", 4)
  np.testing.assert_array_equal(tokens[:stop - start], expected)


def test_source_ids_swap_pad_and_unknown():
  np.testing.assert_array_equal(
      decode_onmt.onmt_source_ids(np.array([[0, 1, 2, 7]])), [[1, 0, 2, 7]])


def test_tiny_run_of_both_peers_end_to_end(tmp_path):
  path = tmp_path / "run.json"
  settings = ",".join(f"{k}={v}" for k, v in TINY.items())
  bench_run.run(bench_run.BenchmarkConfig(
      workload="decode", peers="torch,onmt", reps=1, json=str(path),
      single_thread=True, settings=settings + ",passes=1"))
  out = json.loads(path.read_text())
  entry = out["workloads"]["decode"]
  res = entry["results"]
  assert list(res) == ["seqjax", "torch", "onmt_h8"]
  assert entry["agreement"]["seqjax vs torch beam5@4"] == 1.0
  assert res["onmt_h8"]["versions"]["OpenNMT-py"] == "3.5.1"
  for fw in res:
    assert all(res[fw]["equal_work"].values()), fw
    assert set(res[fw]["reps"]) == set(decode.keys(decode.Settings(**TINY),
                                                    fw))
  metrics = {r["metric"] for r in entry["ratios"]}
  assert "seqjax beam / onmt_h8 beam (sentences/s)" in metrics
  assert "seqjax beam time / seqjax greedy time" in metrics
  text = report.markdown(out)
  assert "| sentences/s: beam5 | 4 |" in text
  assert dataclasses.asdict(decode.Settings(**TINY, passes=1)) == entry[
      "settings"]
