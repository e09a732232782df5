"""The attention benchmark workload on a small made-up pair file.

Speed is measured by ``python -m benchmarks.run --workload=attention``, never
here; these tests check what it measures: the FLOP count, that the PyTorch
peer is seqjax's model (the same logits and gradients from the same
parameters, in every configuration the workload offers), that both train on
the same batches, and a tiny end-to-end run with its table's keys.
"""

import dataclasses
import importlib.util
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import attention as attention_bench
from benchmarks import harness
from benchmarks import run as bench_run
from seqjax.errors import SeqjaxError
from tests import translate_util

TINY = dict(units=8, embedding_dim=5, batch_size=8, ceiling_n=32,
            num_samples=0)
# The configurations the workload's settings reach, the default first: GRU
# and LSTM, one and two directions, each attention and score, with and
# without feeding (the decoder stepped, or run over all steps at once).
CONFIGS = [{}, {"cell": "gru", "attention": "bahdanau"},
           {"attention": "none"},
           {"cell": "gru", "bidirectional": False, "attention_score": "dot",
            "input_feeding": False}]


def varied_pairs(n=200):
  """Made-up pairs of 1 to 6 words: sources and targets of many lengths."""
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
  return attention_bench.Workload(attention_bench.Settings(
      data_path=pair_file, **{**TINY, **kw}))


def _torch():
  if importlib.util.find_spec("torch") is None:
    pytest.skip("torch is not installed (pip install -e '.[bench]')")
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import attention_torch  # pylint: disable=g-import-not-at-top
  return torch, attention_torch


def test_defaults_are_the_issues_model():
  s = attention_bench.Settings()
  assert (s.cell, s.units, s.embedding_dim, s.bidirectional) == (
      "lstm", 256, 128, True)
  assert (s.attention, s.attention_score, s.input_feeding) == (
      "luong", "general", True)
  assert (s.dropout, s.label_smoothing, s.learning_rate, s.batch_size) == (
      0.2, 0.1, 2e-3, 64)


def test_train_flops_per_sample_counted_by_hand():
  pairs = [("abc", "xy"), ("abcde", "xyzw")]  # sources 3, 5; targets 3, 5
  h, e, v = 4, 2, 10
  s = attention_bench.Settings(units=h, embedding_dim=e)
  m = 2 * h  # bidirectional memory
  per_src = 2 * (2 * e * 4 * h + 2 * h * 4 * h) + 2 * m * h  # + keys
  per_tgt = (2 * (e + h) * 4 * h + 2 * h * 4 * h + 2 * h * v  # fed state
             + 2 * (m + h) * h)  # tanh(W_c [c; h])
  per_pair = 2 * h + 2 * m  # score against W_a m, context
  mean = (3 * per_src + 3 * per_tgt + 9 * per_pair
          + 5 * per_src + 5 * per_tgt + 25 * per_pair) / 2
  assert attention_bench.train_flops_per_sample(pairs, s, v) == 3 * mean
  # No attention: the plain model's count (one direction, no feeding).
  plain = dataclasses.replace(s, attention="none", bidirectional=False)
  recurrent = 2 * e * 4 * h + 2 * h * 4 * h
  assert attention_bench.train_flops_per_sample(pairs, plain, v) == 3 * (
      4 * recurrent + 4 * (recurrent + 2 * h * v))


@pytest.mark.full
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(
    f"{k}={v}" for k, v in c.items()) or "default")
def test_torch_model_computes_seqjax_model(pair_file, config):
  # seqjax's parameters copied into the PyTorch model: the same logits on
  # every real target position and the same gradients (seqjax's hand-written
  # recurrent backward passes against PyTorch's autograd), no dropout.
  torch, attention_torch = _torch()
  import jax  # pylint: disable=g-import-not-at-top
  w = _workload(pair_file, num_buckets=1, **config)  # widely varied lengths
  r = w.runner("seqjax")
  params = jax.tree.map(lambda a: a, r._fresh_params(3))  # a fresh dict
  # A sharper readout than a fresh one: logits that vary, a loss far from
  # log(V), so a wrong wire shows.
  params["params"]["readout"]["kernel"] *= 30.0
  batch = w.first_batch()
  assert len(set(batch["src_mask"].sum(-1))) > 2  # padding to mask
  model = attention_torch.AttentionSeq2Seq(len(w.src_vocab),
                                           len(w.tgt_vocab), w.s)
  n_torch = sum(p.numel() for p in model.parameters())
  n_seqjax = sum(a.size for a in jax.tree.leaves(params))
  assert n_torch - n_seqjax == attention_bench.extra_torch_parameters(w.s)
  attention_torch.copy_seqjax_params(model, params)
  model.eval()
  tb = attention_torch.to_torch(batch)
  logits_t = model(tb["src"], tb["lengths"], tb["src_mask"], tb["dec_in"])
  logits_j = np.asarray(jax.jit(r.model.apply)(
      params, batch["src"], batch["dec_in"], batch["src_mask"],
      batch["target_mask"]))
  real = batch["target_mask"].astype(bool)
  assert logits_j[real].std() > 0.5  # not a flat output
  np.testing.assert_allclose(logits_t.detach().numpy()[real], logits_j[real],
                             rtol=1e-4, atol=1e-5)
  loss_t = attention_torch.loss_of(model, tb, w.s.label_smoothing)
  loss_t.backward()
  loss_j, grads = jax.jit(jax.value_and_grad(
      lambda p: r.loss_fn(p, batch, None)[0]))(params)
  assert loss_t.item() == pytest.approx(float(loss_j), rel=1e-5)
  g = grads["params"]
  np.testing.assert_allclose(
      model.encoder.weight_hh_l0.grad.numpy(),
      attention_torch._gates_to_torch(w.s.cell, np.asarray(
          g["encoder"]["recurrent_kernel"])), rtol=1e-3, atol=1e-6)
  np.testing.assert_allclose(model.src_embed.weight.grad.numpy(),
                             np.asarray(g["src_embedding"]["embedding"]),
                             rtol=1e-3, atol=1e-6)


@pytest.mark.full
def test_both_frameworks_train_on_the_same_batches(pair_file):
  torch, _ = _torch()
  w = _workload(pair_file)
  assert len(w.buckets) > 1
  dataset_S, rows_SB = w.epoch_order(1)
  assert len(dataset_S) == w.plan.steps_per_epoch
  # fit's own order for that repetition's seed (its schedule, epoch 0).
  fit_dataset_S, fit_rows = w.plan.epoch(w.s.seed + 1, 0)
  np.testing.assert_array_equal(dataset_S, fit_dataset_S)
  np.testing.assert_array_equal(rows_SB.reshape(-1), fit_rows)
  r = w.runner("torch")
  batch = r._batch(int(dataset_S[0]), rows_SB[0])
  bucket = w.buckets[dataset_S[0]]
  np.testing.assert_array_equal(batch["src"].numpy(),
                                bucket["src"][rows_SB[0]])
  np.testing.assert_array_equal(batch["lengths"].numpy(),
                                bucket["src_mask"][rows_SB[0]].sum(-1))
  out = r.train_epoch(0)
  assert out["train_samples"] == (w.plan.steps_per_epoch - 1) * 8
  assert out["train_compiles"] == 0 and np.isfinite(out["train_loss"])


@pytest.mark.full
def test_tiny_run_end_to_end(pair_file, tmp_path):
  _torch()
  path = tmp_path / "bench.json"
  config = bench_run.BenchmarkConfig(
      workload="attention", peers="torch", reps=1, json=str(path),
      data_path=pair_file, ceiling_n=32,
      settings="units=8,embedding_dim=5,batch_size=8,num_samples=0,"
               "num_buckets=2")
  out = bench_run.run(config)
  on_disk = json.loads(path.read_text())
  work = on_disk["workloads"]["attention"]
  assert work["settings"]["units"] == 8 and work["settings"]["num_buckets"] == 2
  res = work["results"]
  assert res.keys() == {"seqjax", "torch"}
  for fw in res:
    for key in ("train_samples_per_s", "first_step_s", "train_compiles",
                "gflops", "ceiling_gflops", "versions", "checks",
                "train_loss"):
      assert key in res[fw], (fw, key)
    assert "decode_batched_seq_per_s" not in res[fw]  # training alone
    # The same padded batches: seqjax's executed count is the peer's too.
    assert (res[fw]["executed_flops_per_sample"]
            == res["seqjax"]["executed_flops_per_sample"] > 0)
    reps = res[fw]["reps"]
    np.testing.assert_allclose(
        reps["ceiling_fraction"],
        np.array(reps["train_samples_per_s"])
        * res[fw]["executed_flops_per_sample"] / 1e9
        / np.array(reps["ceiling_gflops"]))
  seqjax = res["seqjax"]
  # Every bucket shape compiled before the timed epoch; none inside it.
  assert seqjax["step_shapes_compiled"] == seqjax["train_shapes"] == 2
  assert seqjax["step_compiles_in_fit"] == 0 and seqjax["train_compiles"] <= 1
  assert res["torch"]["train_compiles"] == 0
  n_j, n_t = (res[fw]["checks"]["parameters"] for fw in ("seqjax", "torch"))
  assert n_t - n_j == attention_bench.extra_torch_parameters(
      attention_bench.Settings(units=8))
  assert any("parameters" in line and line.endswith("match")
             for line in work["checks"])
  (row,) = work["ratios"]
  assert row["metric"] == "train_samples_per_s" and row["vs"] == ["torch"]
  assert out["workloads"]["attention"]["first_step_target"]["seqjax_s"] > 0
  table = harness.format_table(res)
  assert "decode_batched_seq_per_s" in table  # shown, as "-"


def test_settings_flag_is_parsed_and_checked():
  parse = bench_run.parse_settings
  s = attention_bench.Settings
  assert parse("attention=bahdanau, units=128,bidirectional=false,"
               "dropout=0", s) == {"attention": "bahdanau", "units": 128,
                                   "bidirectional": False, "dropout": 0.0}
  assert parse("", s) == {}
  for bad, named in [("heads=4", "heads"), ("units", "units"),
                     ("units=many", "units"), ("bidirectional=yes",
                                               "bidirectional"),
                     ("seed=3", "--seed")]:
    with pytest.raises(SeqjaxError, match=named):
      parse(bad, s)


def test_decoding_flags_do_not_apply(pair_file):
  with pytest.raises(SeqjaxError, match="--decode_n does not apply"):
    bench_run.run(bench_run.BenchmarkConfig(workload="attention", peers="",
                                            decode_n=10,
                                            data_path=pair_file))


def test_bad_bucket_order_is_named(pair_file):
  with pytest.raises(SeqjaxError, match="bucket_by"):
    _workload(pair_file, bucket_by="source")


def test_matmul_flops_count_each_scan_step_and_the_costliest_branch():
  a_BF, w_FH, u_HH = (jnp.ones(s) for s in [(3, 4), (4, 5), (5, 5)])

  def net(a_BF, w_FH):
    h_BH = a_BF @ w_FH                                    # 2*3*4*5
    h_BH, _ = jax.lax.scan(lambda h, _: (jnp.tanh(h @ u_HH), None), h_BH,
                           None, length=7)                # 7 * 2*3*5*5
    return jax.lax.cond(h_BH.sum() > 0, lambda h: h @ u_HH @ u_HH,
                        lambda h: h, h_BH).sum()          # 2 * 2*3*5*5
  forward = 2 * 3 * 4 * 5 + 7 * 2 * 3 * 5 * 5 + 2 * 2 * 3 * 5 * 5
  assert harness.jaxpr_matmul_flops(net, a_BF, w_FH) == forward
  # The gradient in w alone: the forward, then per product the cotangent
  # of its input (u is a constant), and w's own gradient a^T @ dh.
  backward = 7 * 2 * 3 * 5 * 5 + 2 * 2 * 3 * 5 * 5 + 2 * 3 * 4 * 5
  assert harness.jaxpr_matmul_flops(jax.grad(net, argnums=1), a_BF,
                                    w_FH) == forward + backward


def test_bad_architecture_is_named(pair_file):
  with pytest.raises(Exception, match="attention"):
    _workload(pair_file, attention="transformer")
  with pytest.raises(Exception, match="dot"):
    _workload(pair_file, attention_score="dot")  # bidirectional: 16 != 8
