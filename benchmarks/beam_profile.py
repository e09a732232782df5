"""Where seqjax's beam search spends its time: the pieces of one step, each
jitted and timed alone at the translate attention model's sizes.

  taskset -c 1 env XLA_FLAGS=--xla_cpu_multi_thread_eigen=false \\
      python -m benchmarks.beam_profile [--model_dir=WORKDIR]

With ``--model_dir`` (a trained translate workdir) the weights are its
own; else a random model of the same sizes (the times are the same). Every
piece is a jitted function of device arrays, timed as the median of many
calls (each includes a dispatch of some 10-30 microseconds); the whole beam
step and greedy step are timed the same way, and the pieces' sum is set
against them. Prints a table and, with ``--json``, writes it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import statistics
import time
import types

import numpy as np

from seqjax.config import field
from seqjax.errors import SeqjaxError


@dataclasses.dataclass
class ProfileConfig:
  mode: str = field("pieces", "pieces: each piece of a step timed alone; "
                    "trace: XLA's own time per operation inside the "
                    "decoders' compiled loops (a profiler trace of "
                    "--trace_batches batches of the real sentences, which "
                    "needs --model_dir); variant: beam search as it is "
                    "against the two-stage top-k (same outputs, timed).",
                    choices=("pieces", "trace", "variant"))
  trace_batches: int = field(4, "trace: batches decoded while tracing.",
                             low=1)
  model_dir: str = field("", "A trained translate workdir (empty: a random "
                         "model of the translate attention model's sizes).")
  batch: int = field(50, "Sentences per batch.", low=1)
  beam_size: int = field(5, "Beams.", low=1)
  src_len: int = field(25, "Source width (the test set's widest: 25).",
                       low=1)
  calls: int = field(60, "Timed calls per piece (the median kept).", low=3)
  json: str = field("", "Write the table here as JSON.")

  def validate(self):
    return []


def _time(fn, *args, calls: int) -> float:
  """Median seconds of ``fn(*args)`` (compiled first)."""
  import jax
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(calls):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def _per_iteration(body, init, calls: int, n: int = 10) -> float:
  """Seconds of one ``body`` in a compiled loop (``lax.fori_loop``), as in
  the search's own loop: a call of ``n + 1`` iterations less a call of one,
  over ``n`` (the dispatch and the copies in and out cancel)."""
  import jax
  loop = lambda m: jax.jit(lambda c: jax.lax.fori_loop(
      0, m, lambda i, c: body(c), c))
  return (_time(loop(n + 1), init, calls=calls)
          - _time(loop(1), init, calls=calls)) / n


def _model(config: ProfileConfig):
  import jax
  import jax.numpy as jnp
  from seqjax.models import Seq2Seq
  if config.model_dir:
    from seqjax import translation
    tr = translation.load_translator(config.model_dir)
    return tr.model, tr.params
  model = Seq2Seq(src_vocab=6691, tgt_vocab=3557, units=256,
                  embedding_dim=128, bidirectional=True, attention="luong",
                  attention_score="general", input_feeding=True)
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 3), jnp.int32),
                               jnp.zeros((1, 2), jnp.int32))
  return model, params


def profile(config: ProfileConfig) -> list[dict]:
  import jax
  import jax.numpy as jnp
  from seqjax import attention as attention_lib
  from seqjax import decoding
  from seqjax.data import vocab as vocab_lib
  from seqjax.decoding import beam as beam_lib
  from seqjax.models import Seq2Seq
  model, params = _model(config)
  b, k, s = config.batch, config.beam_size, config.src_len
  bk = b * k
  rng = np.random.default_rng(0)
  src = rng.integers(4, 100, size=(b, s)).astype(np.int32)
  mask = np.ones((b, s), bool)
  calls = functools.partial(_time, calls=config.calls)
  encode = jax.jit(lambda p, x, m: model.apply(
      p, x, m, method=Seq2Seq.encode_for_decoding))
  state_b = encode(params, src, mask)
  state_bk = jax.jit(lambda st: beam_lib._repeat_beams(st, k))(state_b)
  step = jax.jit(lambda p, tok, st: model.apply(p, tok, st,
                                                method=Seq2Seq.decode_step))
  tok_b = jnp.full((b,), 5, jnp.int32)
  tok_bk = jnp.full((bk,), 5, jnp.int32)
  logits_bk, _ = step(params, tok_bk, state_bk)
  vocab = logits_bk.shape[-1]
  p = params["params"]
  h_bk = state_bk.rnn[0][0]
  readout = jax.jit(lambda kern, bias, x: x @ kern + bias)
  log_softmax = jax.jit(jax.nn.log_softmax)
  cand = jax.jit(lambda lp, alive: (alive[..., None] + lp.reshape(
      b, k, vocab)).reshape(b, k * vocab))
  alive = jnp.zeros((b, k))
  cand_bx = cand(log_softmax(logits_bk), alive)
  top_k = jax.jit(lambda c: jax.lax.top_k(c, 2 * k))

  two_stage = jax.jit(functools.partial(two_stage_candidates, k=k))
  lp_bk = log_softmax(logits_bk)
  att = p["attention"]

  def attend_repeated(q_bkh, memory):
    return attention_lib.attend({"key_kernel": att["key_kernel"]}, "luong",
                                q_bkh, memory)

  def attend_shared(q_bkh, memory):
    # A sentence's K beams as K queries of its one memory (B, K, H).
    ctx, w = attention_lib.attend({"key_kernel": att["key_kernel"]}, "luong",
                                  q_bkh.reshape(b, k, -1), memory)
    return ctx.reshape(bk, -1), w.reshape(bk, -1)
  rows = jnp.asarray(rng.permutation(bk).astype(np.int32))
  beam_state = _search_state(model, params, src, mask, k)
  beam_step = functools.partial(beam_lib._step, model, k=k, max_len=45,
                                stop_id=vocab_lib.END_ID, alpha=0.6)
  looped = functools.partial(_per_iteration, calls=max(config.calls // 4,
                                                       5))

  def decoder_only(carry):
    # The argmax feeds the next step, so the readout is not dead code.
    tok, st = carry
    logits, st = step(params, tok, st)
    return decoding.argmax(logits), st
  table = [
      ("greedy: decode_step + argmax, B rows (in a loop)",
       looped(decoder_only, (tok_b, state_b))),
      ("beam: decode_step + argmax, B*K rows (in a loop)",
       looped(decoder_only, (tok_bk, state_bk))),
      ("  readout matmul (B*K, H) @ (H, V)", calls(
          readout, p["readout"]["kernel"], p["readout"]["bias"], h_bk)),
      ("  readout matmul (B, H) @ (H, V)", calls(
          readout, p["readout"]["kernel"], p["readout"]["bias"],
          h_bk[:b])),
      ("  attention, memory repeated per beam (B*K, S, M)",
       calls(jax.jit(attend_repeated), h_bk, state_bk.memory)),
      ("  attention, K queries of one memory (B, S, M)",
       calls(jax.jit(attend_shared), h_bk, state_b.memory)),
      ("beam: log_softmax (B*K, V)", calls(log_softmax, logits_bk)),
      ("beam: candidates alive + logp (B, K*V)", calls(cand, lp_bk, alive)),
      ("beam: top_k 2K of (B, K*V)", calls(top_k, cand_bx)),
      ("beam: two-stage top_k, log-softmax included "
       "(two_stage_candidates)",
       calls(two_stage, logits_bk, alive)),
      ("beam: gather the decoder state by beam (in a loop)",
       looped(lambda st: beam_lib._gather_beams(st, rows), state_bk)),
      ("beam: one whole step, beam._step (in a loop)",
       looped(lambda st: beam_step(params, st), beam_state)),
  ]
  return [{"piece": name, "ms": secs * 1e3} for name, secs in table]


def _search_state(model, params, src, mask, k):
  """A search state after one step (every beam live), to time _step on."""
  import jax
  import jax.numpy as jnp
  from seqjax.decoding import beam as beam_lib
  from seqjax.models import Seq2Seq
  b = src.shape[0]
  state = model.apply(params, src, mask, method=Seq2Seq.encode_for_decoding)
  s = beam_lib._Search(
      t=jnp.ones((), jnp.int32), state=beam_lib._repeat_beams(state, k),
      last_BK=jnp.full((b, k), 5, jnp.int32),
      alive_tokens_BKT=jnp.zeros((b, k, 45), jnp.int32),
      alive_logp_BK=jnp.broadcast_to(-0.1 * jnp.arange(k), (b, k)),
      fin_tokens_BKT=jnp.zeros((b, k, 45), jnp.int32),
      fin_score_BK=jnp.full((b, k), -jnp.inf),
      fin_logp_BK=jnp.full((b, k), -jnp.inf),
      fin_len_BK=jnp.zeros((b, k), jnp.int32))
  return s


# ------------------------------------------------- a candidate speedup


def two_stage_candidates(logits_XV, alive_logp_BK, k: int):
  """``beam._step``'s 2K best continuations over K x V, from each beam's 2K
  best tokens: a beam's row is shifted by one constant (its log-sum-exp
  and its hypothesis' sum), so its best tokens by logit are its best
  candidates, and the 2K best over K x V are among the K x 2K. The values
  are computed with ``jax.nn.log_softmax``'s operations (bitwise the
  same); the (B, K*V) candidate array is never written. -> (logp (B, 2K),
  index into K x V (B, 2K))."""
  import jax
  import jax.numpy as jnp
  batch, vocab = alive_logp_BK.shape[0], logits_XV.shape[-1]
  logits_XV = logits_XV.astype(jnp.float32)
  shifted_XV = logits_XV - jax.lax.stop_gradient(
      logits_XV.max(-1, keepdims=True))
  lse_X1 = jnp.log(jnp.sum(jnp.exp(shifted_XV), -1, keepdims=True))
  top_XC, token_XC = jax.lax.top_k(shifted_XV, 2 * k)
  cand_BKC = alive_logp_BK[..., None] + (top_XC - lse_X1).reshape(
      batch, k, 2 * k)
  logp_BC, j_BC = jax.lax.top_k(cand_BKC.reshape(batch, 2 * k * k), 2 * k)
  token_BC = jnp.take_along_axis(token_XC.reshape(batch, -1), j_BC, axis=1)
  return logp_BC, (j_BC // (2 * k)) * vocab + token_BC


def _variant_step(model, params, s, *, k, max_len, stop_id, alpha):
  """``seqjax.decoding.beam._step`` (as of commit 34341f4) with its candidates
  from ``two_stage_candidates``; the rest is the same code."""
  import jax
  import jax.numpy as jnp
  from seqjax.decoding import beam as beam_lib
  from seqjax.models import Seq2Seq
  take, neg_inf = beam_lib._take, beam_lib.NEG_INF
  batch = s.alive_logp_BK.shape[0]
  logits_XV, state = model.apply(params, s.last_BK.reshape(-1), s.state,
                                 method=Seq2Seq.decode_step)
  vocab = logits_XV.shape[-1]
  logp_BC, index_BC = two_stage_candidates(logits_XV, s.alive_logp_BK, k)
  origin_BC, token_BC = index_BC // vocab, index_BC % vocab
  tokens_BCT = take(s.alive_tokens_BKT, origin_BC).at[:, :, s.t].set(
      token_BC)
  ends_BC = jnp.broadcast_to(s.t == max_len - 1, token_BC.shape)
  if stop_id is not None:
    ends_BC = ends_BC | (token_BC == stop_id)
  finishes_BC = ends_BC & (jnp.arange(2 * k) < k)
  alive_logp_BK, pick_BK = jax.lax.top_k(
      jnp.where(ends_BC, neg_inf, logp_BC), k)
  rows_BK = jnp.arange(batch)[:, None] * k + take(origin_BC, pick_BK)
  length = s.t + 1
  new_score_BC = jnp.where(finishes_BC,
                           logp_BC / beam_lib.penalty(length, alpha), neg_inf)
  fin_score_BK, fin_pick_BK = jax.lax.top_k(
      jnp.concatenate([s.fin_score_BK, new_score_BC], axis=1), k)
  merged = lambda old, new: take(jnp.concatenate([old, new], axis=1),
                                 fin_pick_BK)
  return beam_lib._Search(
      t=length, state=beam_lib._gather_beams(state, rows_BK.reshape(-1)),
      last_BK=take(token_BC, pick_BK),
      alive_tokens_BKT=take(tokens_BCT, pick_BK),
      alive_logp_BK=alive_logp_BK,
      fin_tokens_BKT=merged(s.fin_tokens_BKT, tokens_BCT),
      fin_score_BK=fin_score_BK,
      fin_logp_BK=merged(s.fin_logp_BK, logp_BC),
      fin_len_BK=merged(s.fin_len_BK, jnp.full_like(token_BC, length)))


def compare_variant(config: ProfileConfig, src_NS, mask_NS, model, params,
                    max_len: int, alpha: float = 0.6, reps: int = 3) -> dict:
  """The beam search decoder as it is and with ``_variant_step``
  (patched in while it traces), over all sentences in batches: whether
  every output is the same, and each one's best seconds (interleaved)."""
  import jax
  from seqjax import decoding
  from seqjax.data import vocab as vocab_lib
  from seqjax.decoding import beam as beam_lib
  ids = dict(max_len=max_len, start_id=vocab_lib.START_ID,
             stop_id=vocab_lib.END_ID, pad_id=vocab_lib.PAD_ID)
  b = config.batch
  make = lambda: decoding.make_decoder(
      model, decoding.BeamSearch(config.beam_size, alpha), **ids)
  original, variant = make(), make()
  first = (src_NS[:b], mask_NS[:b])
  jax.block_until_ready(original(params, *first))
  saved = beam_lib._step
  beam_lib._step = _variant_step
  try:
    jax.block_until_ready(variant(params, *first))  # traced with it
  finally:
    beam_lib._step = saved

  def decode(fn):
    n = len(src_NS) // b * b  # whole batches only
    outs = [fn(params, src_NS[i:i + b], mask_NS[i:i + b])
            for i in range(0, n, b)]
    return jax.device_get(outs)
  secs = {"original": [], "variant": []}
  outs = {}
  for _ in range(reps):
    for name, fn in (("original", original), ("variant", variant)):
      t, outs[name] = _timed(lambda: decode(fn))
      secs[name].append(t)
  same = all(np.array_equal(a.tokens_BNT, c.tokens_BNT)
             and np.array_equal(a.scores_BN, c.scores_BN)
             for a, c in zip(outs["original"], outs["variant"]))
  return {"same_tokens_and_scores": bool(same),
          "original_s": min(secs["original"]),
          "variant_s": min(secs["variant"]),
          "steps": int(sum(int(o.steps) for o in outs["original"])),
          "sentences": len(src_NS) // b * b}


def _timed(fn):
  t = time.perf_counter()
  out = fn()
  return time.perf_counter() - t, out


def trace(config: ProfileConfig) -> list[dict]:
  """Each decoder's loop traced (``jax.profiler``; XLA:CPU's per-operation
  events): every operation's milliseconds per decoder step, named by the
  HLO instruction and the JAX operation it came from."""
  import gzip
  import glob
  import os
  import tempfile
  import jax
  from benchmarks import beam as beam_bench
  w = beam_bench.Workload(beam_bench.Settings(
      model_dir=config.model_dir, batches=str(config.batch),
      beam_size=config.beam_size))
  runner = beam_bench.SeqjaxRunner(w)
  b, rows = config.batch, []
  for decoder, fn in runner.fns.items():
    fn = jax.jit(fn)  # one executable, whose operations the trace names
    args = (runner.params, w.src_NS[:b], w.mask_NS[:b])
    described = _hlo_descriptions(fn.lower(*args).compile().as_text())
    jax.block_until_ready(fn(*args))
    with tempfile.TemporaryDirectory() as tmp:
      steps = 0
      with jax.profiler.trace(tmp, create_perfetto_trace=True):
        for i in range(config.trace_batches):
          _, st = jax.block_until_ready(fn(
              runner.params, w.src_NS[i * b:(i + 1) * b],
              w.mask_NS[i * b:(i + 1) * b]))
          steps += int(st)
      path = glob.glob(os.path.join(tmp, "plugins", "profile", "*",
                                    "perfetto_trace.json.gz"))[0]
      with gzip.open(path) as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    events = [e for e in events if e.get("ph") == "X"]
    loops = {}
    for e in events:
      if e["name"].startswith("while"):
        loops[e["name"]] = loops.get(e["name"], 0.0) + e["dur"]
    loop = max(loops, key=loops.get)  # the decoding loop: the longest
    spans = [(e["ts"], e["ts"] + e["dur"]) for e in events
             if e["name"] == loop]
    inside, outside = {}, {}
    for e in events:
      if e["name"].startswith(("while", "Thunk", "$", "Pjit")):
        continue
      where = inside if any(a <= e["ts"] and e["ts"] + e["dur"] <= z
                            for a, z in spans) else outside
      where[e["name"]] = where.get(e["name"], 0.0) + e["dur"] / 1e3
    loop_ms = loops[loop] / 1e3
    rows.append({"decoder": decoder, "where": "loop", "op": loop,
                 "what": f"the decoding loop: {steps} steps",
                 "ms_per_step": loop_ms / steps, "share": 1.0})
    for t, n in sorted(((t, n) for n, t in inside.items()), reverse=True
                       )[:12]:
      rows.append({"decoder": decoder, "where": "loop", "op": n,
                   "what": described.get(n, ""), "ms_per_step": t / steps,
                   "share": t / loop_ms})
    batches = config.trace_batches
    rows.append({"decoder": decoder, "where": "outside the loop",
                 "op": "(all)", "what": "encoder and set-up, per batch",
                 "ms_per_batch": sum(outside.values()) / batches})
    for t, n in sorted(((t, n) for n, t in outside.items()), reverse=True
                       )[:4]:
      rows.append({"decoder": decoder, "where": "outside the loop", "op": n,
                   "what": described.get(n, ""),
                   "ms_per_batch": t / batches})
  return rows


def _hlo_descriptions(text: str) -> dict[str, str]:
  """HLO instruction name -> its shape and the JAX operations it computes
  (a fusion: those of its fused computation), from compiled HLO text."""
  comps, current = {}, None
  for line in text.splitlines():
    header = re.match(r"^(?:ENTRY )?%(\S+) .*\{$", line)
    if header:
      current = comps.setdefault(header.group(1), [])
    elif current is not None:
      current.append(line)
  out = {}
  for lines in comps.values():
    for line in lines:
      m = re.match(r"\s*(?:ROOT )?%(\S+) = (.+?) [a-z-]+\(", line)
      if not m:
        continue
      called = re.search(r"calls=%([\w.\-]+)", line)
      ops = []
      for source in comps.get(called.group(1), []) if called else [line]:
        op = re.search(r'op_name="([^"]+)"', source)
        short = "/".join(op.group(1).split("/")[-2:]) if op else None
        if short and short not in ops:
          ops.append(short)
      shape = re.sub(r"\{[^}]*\}", "", m.group(2))
      out[m.group(1)] = f"{shape}: {', '.join(ops[:4])}"
  return out


def _print_trace(config: ProfileConfig) -> list[dict]:
  import os
  if not config.model_dir:
    raise SeqjaxError("--mode=trace decodes the real test sentences: it "
                      "needs --model_dir")
  # XLA:CPU names its operations in a trace only with this flag (read when
  # the backend starts, which is later).
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_cpu_enable_xprof_traceme=true").strip()
  rows = trace(config)
  for r in rows:
    cost = (f"{r['ms_per_step']:7.3f} ms/step {r['share'] * 100:5.1f}%"
            if "ms_per_step" in r else f"{r['ms_per_batch']:7.2f} ms/batch")
    print(f"{r['decoder']:7s} {r['op']:24s} {cost:22s} {r['what'][:100]}")
  _write(config, rows)
  return rows


def _print_variant(config: ProfileConfig) -> list[dict]:
  from benchmarks import beam as beam_bench
  if not config.model_dir:
    raise SeqjaxError("--mode=variant decodes the real test sentences: it "
                      "needs --model_dir")
  w = beam_bench.Workload(beam_bench.Settings(model_dir=config.model_dir,
                                              batches=str(config.batch)))
  rows = []
  for alpha in (0.6, 0.0):
    row = {"length_penalty": alpha, **compare_variant(
        config, w.src_NS, w.mask_NS, w.model, w.params, w.max_len, alpha)}
    print(row)
    rows.append(row)
  _write(config, rows)
  return rows


def _write(config: ProfileConfig, rows: list[dict]) -> None:
  if config.json:
    with open(config.json, "w", encoding="utf-8") as f:
      json.dump({"config": dataclasses.asdict(config), "rows": rows}, f,
                indent=2)


def run(config: ProfileConfig) -> list[dict]:
  if config.mode == "trace":
    return _print_trace(config)
  if config.mode == "variant":
    return _print_variant(config)
  rows = profile(config)
  width = max(len(r["piece"]) for r in rows)
  print(f"batch {config.batch}, beam {config.beam_size}, source width "
        f"{config.src_len}: median of {config.calls} calls")
  for r in rows:
    print(f"{r['piece']:{width}s} {r['ms']:8.3f} ms")
  _write(config, rows)
  return rows


if __name__ == "__main__":
  from experiments import common
  common.main(types.SimpleNamespace(name="benchmarks.beam_profile",
                                    config_cls=ProfileConfig, run=run))
