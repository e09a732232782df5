"""The translate benchmark workload on a small made-up pair file.

Speed is measured by ``python -m benchmarks.run --workload=translate``, never
here; these tests check what it measures: the FLOP count, the character sets,
that every decoder of a framework gives the same translations, that the
peers are the example's model, and the result keys.
"""

import importlib.util

import numpy as np
import pytest

from benchmarks import harness
from benchmarks import run as bench_run
from benchmarks import translate as translate_bench
from benchmarks.peers import keras_translate as kt
from tests import translate_util

# 400 pairs: 320 training pairs, 40 steps of 8 in up to 4 buckets.
TINY = dict(latent_dim=16, batch_size=8, decode_n=12, decode_batch=8,
            loop_n=3, ceiling_n=32, num_samples=0)


def varied_pairs(n=400):
  """Made-up pairs of 1 to 6 words (so they fall into several buckets)."""
  words = ["cat", "dog", "tea", "sun", "red"]
  zh = ["猫", "狗", "茶", "日", "红"]
  out = []
  for i in range(n):
    ks = [(i + j) % 5 for j in range(1 + i % 6)]
    out.append((" ".join(words[k] for k in ks) + ".",
                "".join(zh[k] for k in ks) + "。"))
  return out


@pytest.fixture(scope="module")
def pair_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("pairs") / "toy.txt"
  return translate_util.write_pairs(path, varied_pairs())


def _workload(pair_file, **kw):
  return translate_bench.Workload(translate_bench.Settings(
      data_path=pair_file, **{**TINY, **kw}))


def test_train_flops_per_sample_counted_by_hand():
  pairs = [("abc", "xy"), ("abcde", "xyzw")]  # sources 3, 5; targets 3, 5
  u, v = 4, 10
  recurrent, readout = 2 * u * 4 * u, 2 * u * v
  expected = 3 * (4 * recurrent + 4 * (recurrent + readout))  # mean steps
  assert translate_bench.train_flops_per_sample(pairs, u, v) == expected


def test_workload_splits_like_keras_and_bounds_decoding(pair_file):
  w = _workload(pair_file, train_samples=100)
  pairs = varied_pairs()
  assert w.train_pairs == pairs[:100]
  assert w.decode_pairs == pairs[320:332]
  assert w.max_decode_len == max(len(t) for _, t in pairs) + 1
  assert list(w.decode_sources()) == [s for s, _ in pairs[320:332]]


def test_real_file_has_the_examples_character_counts():
  path = translate_util.real_pair_file()
  if path is None:
    pytest.skip(translate_util.NO_REAL_FILE)
  w = translate_bench.Workload(translate_bench.Settings(data_path=path))
  tables = kt.char_tables(w.all_pairs, w.all_pairs)
  # The (and the Keras example's) 72 input / 2,511 output characters
  # (with \t and \n; the space that pads is among both already).
  assert len(tables.input_chars) == 72
  assert len(tables.target_chars) == 2511
  assert len(w.train_pairs) == 8000 and len(w.decode_pairs) == 1000


def test_id_arrays_are_the_one_hot_arrays_hot_entries():
  pairs = varied_pairs(30)
  tables = kt.char_tables(pairs, pairs)
  srcs, tgts = [s for s, _ in pairs], [t for _, t in pairs]
  np.testing.assert_array_equal(kt.input_ids(tables, srcs),
                                kt.one_hot_inputs(tables, srcs).argmax(-1))
  dec_in, target = kt.target_ids(tables, tgts)
  oh_in, oh_target = kt.one_hot_targets(tables, tgts)
  np.testing.assert_array_equal(dec_in, oh_in.argmax(-1))
  np.testing.assert_array_equal(target, oh_target.argmax(-1))


@pytest.mark.full
def test_seqjax_decoders_agree_and_buckets_compile_once_each(pair_file):
  w = _workload(pair_file)
  r = w.runner("seqjax")
  out = r.train_epoch(0)
  assert 1 < out["train_shapes"] == len(r.buckets) <= 4
  # Every bucket shape compiled before the timed epoch; none inside it.
  assert out["step_shapes_compiled"] == out["train_shapes"]
  assert out["step_compiles_in_fit"] == 0 and out["train_compiles"] <= 1
  assert out["train_samples"] > 0 and out["first_step_s"] > 0
  src = w.decode_sources()[:5]
  batched = r.decode_batched(src)
  assert r.decode_loop(src) == batched
  assert r.decode_loop_split(src) == batched
  assert 0.0 <= out["decode_chrf"] <= 100.0


@pytest.mark.full
def test_padded_variant_is_one_bucket_as_wide_as_the_peers(pair_file):
  w = _workload(pair_file)
  r, bucketed = w.runner("seqjax_padded"), w.runner("seqjax")
  (b,) = r.buckets
  assert r.plan is None and len(b["src"]) == sum(
      len(x["src"]) for x in bucketed.buckets)
  assert b["target"].shape[1] == max(x["target"].shape[1]
                                     for x in bucketed.buckets)
  out = r.train_epoch(0)
  assert out["train_shapes"] == 1 == out["step_shapes_compiled"]
  assert out["step_compiles_in_fit"] == 0 and out["first_step_s"] > 0


@pytest.mark.full
def test_tiny_run_has_every_key(pair_file):
  w = _workload(pair_file)
  results, notes = harness.measure(w, ["seqjax"], reps=1, log=lambda _: None,
                                   settle_s=0.0)
  res = results["seqjax"]
  for key in harness.KEYS + ("versions", "decode_chrf", "decode_mean_chars",
                             "train_shapes"):
    assert key in res, key
  assert res["step_shapes_compiled"] == res["train_shapes"]
  assert res["step_compiles_in_fit"] == 0 and res["train_compiles"] <= 1
  assert res["gflops"] == pytest.approx(
      res["train_samples_per_s"] * w.train_flops_per_sample / 1e9)
  assert notes == []


def test_data_path_flag_is_refused_for_reverse():
  with pytest.raises(Exception, match="--data_path does not apply"):
    bench_run.run(bench_run.BenchmarkConfig(workload="reverse", peers="",
                                            data_path="x.txt"))


def test_missing_pair_file_is_named(tmp_path):
  missing = str(tmp_path / "nope.txt")
  with pytest.raises(Exception, match="nope.txt"):
    translate_bench.Workload(translate_bench.Settings(data_path=missing))


def _peer(name, pair_file):
  if importlib.util.find_spec(bench_run.PEER_PACKAGES[name]) is None:
    pytest.skip(f"{name} is not installed (pip install -e '.[bench]')")
  w = _workload(pair_file, train_samples=16)
  return w, w.runner(name)


def _example_param_count(n_in, n_out, u):
  # Two LSTMs (4 gates: input kernel, recurrent kernel, bias) and a Dense.
  return 4 * u * (n_in + u + 1) + 4 * u * (n_out + u + 1) + u * n_out + n_out


@pytest.mark.full
def test_keras_peer_is_the_example_model(pair_file):
  w, r = _peer("keras", pair_file)
  n_in, n_out = len(r.tables.input_chars), len(r.tables.target_chars)
  assert r.model.count_params() == _example_param_count(n_in, n_out, 16)
  src = w.decode_sources()[:4]
  assert r.decode_loop(src) == r.decode_batched(src)


@pytest.mark.full
@pytest.mark.parametrize("name", ["keras", "torch"])
def test_peers_early_stop_decodes_the_same_sentences(pair_file, name):
  w, r = _peer(name, pair_file)
  src = w.decode_sources()[:4]
  fixed = r.decode_batched(src)
  w.s.decode_early_stop = True  # the runner reads it at each decode
  assert r.decode_batched(src) == fixed and r.decode_loop(src) == fixed
  # A readout biased to the end symbol: every sentence stops at once.
  end = r.tables.target_index[kt.END]
  if name == "torch":
    import torch
    with torch.no_grad():
      r.model.readout.bias[end] += 1e4
  else:
    kernel, bias = r.decoder.layers[-1].get_weights()
    bias[end] += 1e4
    r.decoder.layers[-1].set_weights([kernel, bias])
  assert r.decode_batched(src) == [""] * 4 == r.decode_loop(src)
  w.s.decode_early_stop = False
  assert r.decode_batched(src) == [""] * 4


@pytest.mark.full
def test_torch_peer_is_the_example_model_and_trains(pair_file):
  w, r = _peer("torch", pair_file)
  n_in, n_out = len(r.tables.input_chars), len(r.tables.target_chars)
  n = sum(p.numel() for p in r.model.parameters())
  # nn.LSTM keeps two bias vectors: 4u more per layer than Keras.
  assert n == _example_param_count(n_in, n_out, 16) + 2 * 4 * 16
  out = r.train_epoch(0)
  assert out["train_samples"] == 8 and out["train_compiles"] == 0
  src = w.decode_sources()[:4]
  assert r.decode_loop(src) == r.decode_batched(src)
