"""What every benchmark workload shares: timing, the matmul ceiling, compile
counting, machine facts, and the interleaved measurement loop.

A workload is a module registered in ``benchmarks.run.WORKLOADS`` (see
``benchmarks.reverse`` and ``benchmarks.translate``) with:

* ``Settings``: a dataclass of its sizes (the fields ``benchmarks.run``'s
  flags override: ``train_samples``, ``decode_n``, ``decode_batch``,
  ``loop_n``, ``ceiling_n``, ``seed``; translate also ``data_path``);
* ``Workload(settings)`` with ``s`` (the settings), ``targets`` and
  ``first_step_max_s`` (what to reach), ``train_flops_per_sample``,
  ``loop_n``, ``ceiling_n``, ``frameworks()``, ``decode_sources()`` and
  ``runner(framework)``, built identically in every worker process;
  optionally ``measures_decoding = False`` (a training-only workload: no
  decoder is warmed up or timed, and the runners need no decoders) and
  ``compare_checks(results) -> lines`` (see ``checks`` below).

A runner measures one framework:

* ``train_epoch(rep) -> dict`` builds a fresh model (not timed), then times
  ``first_step_s`` (see ``FIRST_STEP``) and one epoch: ``train_seconds``,
  ``train_samples``, ``train_compiles`` (see ``TRAIN_COMPILES``),
  ``threads`` and a ``decode_*`` quality figure (optional sanity check:
  ``decode_accuracy``, ``decode_chrf``);
* ``decode_batched(src) -> tokens`` and ``decode_loop(src) -> tokens`` decode
  held-out sources in batches / one at a time (warmed up before timing);
  ``extra_decoders()`` may name more one-at-a-time variants;
* ``ceiling_gflops(n)``: a float32 (n, n) @ (n, n) matmul, that framework's;
* ``versions()`` and ``notes``; optionally ``checks``, a dict of facts to
  compare across frameworks (parameter counts, a first loss), kept as each
  framework's ``checks`` in the results.

Each framework runs in its own worker process (so no thread pool or compile
cache is shared, and a framework is idle while another is measured); the
harness runs them one after another within each repetition (the order
rotating), so a change in the machine's load hits all of them; every number
is the median over repetitions (a repetition's decoding numbers: the best of
three passes); a ratio is the median of the repetitions' own ratios.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import time
from typing import Any, Callable, Optional

import numpy as np

# The keys every framework's result has (issue 6), in table order.
KEYS = ("train_samples_per_s", "first_step_s", "train_compiles",
        "decode_batched_seq_per_s", "decode_loop_seq_per_s", "gflops",
        "ceiling_gflops")


# One definition for every framework.
FIRST_STEP = ("first_step_s: from a freshly built model to its first finished "
              "parameter update, whatever the framework does before it "
              "(tracing, every compile it makes first, one step)")
TRAIN_COMPILES = ("train_compiles: XLA compiles inside the timed epoch "
                  "(Keras: its timed fit alone; seqjax: all of fit, its "
                  "untimed setup included, its step compiled beforehand; 0 "
                  "for eager PyTorch)")


def threads() -> int:
  """The CPUs seqjax's XLA:CPU computes on (one with --single_thread, see
  ``use_one_thread``): the peers are set to the same number."""
  return len(os.sched_getaffinity(0))


def median(values) -> float:
  values = [v for v in values if v is not None]
  return float(statistics.median(values)) if values else float("nan")


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
  """Seconds of ``fn()`` (which must return host data, so work is finished)."""
  t = time.perf_counter()
  out = fn()
  return time.perf_counter() - t, out


def library_decoder(model, kind: str, **kw):
  """The benchmarks' one way into seqjax's decoding API (follow a change of
  that API here). ``kind``:

  * "greedy": ``(decode, in_batches)``: ``decode(params, src_BS,
    mask_BS=None) -> tokens_BT`` and ``in_batches(params, src_NS, batch,
    mask_NS=None) -> tokens_NT`` (one compiled shape);
  * "greedy_steps", "beam": ``decode(params, src_BS, mask_BS) -> (tokens_BT,
    steps)``, beam's best hypothesis (``beam_size``, ``length_penalty``);
  * "greedy_inflight": ``decode(params, src_NS, mask_NS, slots) ->
    (tokens_NT, steps, rows stepped)``, all N sentences in one queue
    decoded by ``slots`` rows (in-flight batching);
  * "beam_inflight": the same for beam search (``beam_size``,
    ``length_penalty``), ``slots`` sentences of K rows, the best
    hypothesis' tokens;
  * "inference": ``(encode, decode_step)``, the tutorial's split;
  * "translator": the decoder a restored translator (``model``) is
    trained to be decoded with (its spec's greedy or beam), ``max_len``.
  """
  from seqjax import decoding
  if kind == "greedy":
    decode = decoding.make_decoder(model, **kw)
    return decode, lambda params, src, batch, mask=None: (
        decoding.decode_in_batches(decode, params, src, batch, mask))
  if kind == "greedy_steps":
    greedy = decoding.make_decoder(model, full=True, **kw)
    return lambda p, x, m: greedy(p, x, m)[:2]
  if kind == "greedy_inflight":
    queue = decoding.make_decoder(model, full=True, in_flight=True, **kw)
    return lambda p, x, m, slots: _queue_steps(queue, p, x, m, slots)
  if kind == "beam_inflight":
    queue = decoding.make_decoder(
        model, decoding.BeamSearch(kw.pop("beam_size"),
                                   kw.pop("length_penalty", 0.0)),
        full=True, in_flight=True, **kw)
    return lambda p, x, m, slots: _queue_steps(queue, p, x, m, slots)
  if kind == "beam":
    beam = decoding.make_decoder(
        model, decoding.BeamSearch(kw.pop("beam_size"),
                                   kw.pop("length_penalty", 0.0)),
        full=True, **kw)
    return lambda p, x, m: _best_and_steps(beam(p, x, m))
  if kind == "inference":
    return decoding.make_inference_fns(model)
  if kind == "translator":
    from seqjax import translation
    return translation.make_decoder(model.spec, model.model, kw["max_len"])
  raise ValueError(f"unknown decoder kind {kind!r}")


def _queue_steps(queue, params, src_NS, mask_NS, slots: int):
  from seqjax import decoding
  n = len(src_NS)
  out = queue(params, *decoding.pad_queue(src_NS, mask_NS, slots),
              slots=slots, count=np.int32(n))
  tokens = out.tokens_NT if hasattr(out, "tokens_NT") else (
      out.tokens_QNT[:, 0])
  return tokens[:n], out.steps, out.rows_stepped


def _best_and_steps(beams):
  return beams.tokens_BNT[:, 0], beams.steps


def reverse_default_setup(steps: int, batch_size: int = 32):
  """The reverse task's default model (51 features, 128 LSTM units) and
  ``steps`` batches of its data, for the overhead benchmarks: -> (model,
  params, data, loss_fn, tx)."""
  import jax  # pylint: disable=g-import-not-at-top
  from seqjax import train as train_lib  # pylint: disable=g-import-not-at-top
  from seqjax.data import reverse  # pylint: disable=g-import-not-at-top
  # pylint: disable-next=g-import-not-at-top
  from seqjax.models import ModelSettings, Seq2Seq
  data = reverse.generate(np.random.default_rng(0), steps * batch_size)
  model = Seq2Seq(src_vocab=51, tgt_vocab=51,
                  settings=ModelSettings(units=128))
  params = model.init(jax.random.key(0), data["src"][:1], data["dec_in"][:1])
  # One optimizer object for every run: it is part of jit's cache key.
  return (model, params, data, train_lib.make_seq2seq_loss(model),
          train_lib.make_optimizer("adam"))


def write_overhead_json(path: str, fields: dict, rows: list) -> None:
  """An overhead benchmark's JSON: its settings (``fields``), the machine's
  backend, devices, load and versions, and its ``rows``."""
  import jax  # pylint: disable=g-import-not-at-top
  result = {**fields, "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()],
            "cpu_count": os.cpu_count(), "load_avg": os.getloadavg(),
            "python": platform.python_version(), "jax": jax.__version__,
            "rows": rows}
  with open(path, "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2)
  print(f"Wrote {path}")


def seqjax_versions() -> dict:
  import flax
  import jax
  import optax
  import seqjax
  return {"seqjax": seqjax.__version__, "jax": jax.__version__,
          "flax": flax.__version__, "optax": optax.__version__}


def keras_versions() -> dict:
  import jax
  import keras
  return {"keras": keras.__version__, "backend": keras.backend.backend(),
          "jax": jax.__version__}


def time_keras_epoch(model, inputs: list, targets, batch_size: int) -> dict:
  """A compiled Keras model's timed first ``train_on_batch`` (its first
  update, compile included), then one timed ``fit`` epoch over all of
  ``inputs``. ``fit`` compiles a train function of its own: on one batch
  first, untimed, so the epoch's samples/s excludes compiles as every
  framework's does; compiles are counted in the timed epoch alone."""
  b = batch_size
  from seqjax import train as train_lib
  with train_lib.count_compiles() as warmup:
    first, _ = timed(lambda: model.train_on_batch([x[:b] for x in inputs],
                                                  targets[:b]))
    model.fit([x[:b] for x in inputs], targets[:b], batch_size=b, epochs=1,
              verbose=0)
  warmup_compiles = warmup.count
  with train_lib.count_compiles() as counter:
    secs, _ = timed(lambda: model.fit(inputs, targets, batch_size=b,
                                      epochs=1, shuffle=True, verbose=0))
  return {"first_step_s": first, "train_seconds": secs,
          "train_samples": len(inputs[0]), "train_compiles": counter.count,
          "warmup_compiles": warmup_compiles, "threads": threads()}


def time_jax_first_update(multi_step, state, datasets: list,
                          batch_size: int, steps_per_call: int) -> float:
  """seqjax's ``first_step_s``: a fresh jitted ``multi_step`` (``fit``'s)
  compiled for every dataset's shapes, as ``fit`` does before its first step,
  then a call that runs one step; ``state`` (donated) is a throwaway copy.
  ``fit`` given the same ``multi_step`` then compiles nothing more."""
  import jax
  import jax.numpy as jnp
  k = steps_per_call
  idx_KB = np.zeros((k, batch_size), np.int32)
  idx_KB[0] = np.arange(batch_size)
  no_reset, halted = np.zeros(k, bool), jnp.zeros((), bool)
  t = time.perf_counter()
  device = [jax.device_put(d) for d in datasets]
  for data in device[1:]:  # every step skipped: compiles only
    state, _, _, _ = multi_step(state, (), data, idx_KB, np.zeros(k, bool),
                                no_reset, halted)
  state, _, _, _ = multi_step(state, (), device[0], idx_KB,
                              np.arange(k) < 1, no_reset, halted)
  jax.block_until_ready(state.params)
  return time.perf_counter() - t


def fit_epoch(model, params, loss_fn, data, batch_size: int, seed: int,
              optimizer: tuple = ("adam",), plan=None) -> tuple:
  """One ``train.fit`` epoch from ``params`` as seqjax's users run it, a
  fresh jitted step (its compiles measured), the first update timed apart
  (``time_jax_first_update``); ``data``: a dataset, or buckets with their
  ``plan``. -> (state, fit's stats, the runner's timing fields). The
  benchmarks' one way into seqjax's training loop."""
  import jax
  import jax.numpy as jnp
  from seqjax import train as train_lib
  state = train_lib.create_train_state(model, params,
                                       train_lib.make_optimizer(*optimizer))
  multi_step = train_lib.make_multi_step(loss_fn)
  config = train_lib.FitConfig(batch_size=batch_size, epochs=1, seed=seed,
                               log_every_steps=0)
  first = time_jax_first_update(
      multi_step, jax.tree.map(jnp.copy, state),
      data if isinstance(data, list) else [data], batch_size,
      config.steps_per_call)
  cached = train_lib.compiles_of(multi_step)
  with train_lib.count_compiles() as counter:
    state, stats = train_lib.fit(state, data, loss_fn, config,
                                 multi_step=multi_step, batch_plan=plan)
    compiles = counter.count
  return state, stats, {
      "first_step_s": first, "train_seconds": stats.steady_seconds,
      "train_samples": stats.steady_steps * batch_size,
      # All of fit (an upper bound of its timed epoch's compiles).
      "train_compiles": compiles,
      "step_compiles_in_fit": train_lib.compiles_of(multi_step) - cached,
      "step_shapes_compiled": stats.compiles, "threads": threads()}


def time_eager_epoch(step: Callable[[np.ndarray], Any], n: int,
                     batch_size: int, seed) -> dict:
  """An eager framework's epoch: ``step(rows)`` trains on those rows and
  returns its loss (a scalar whose ``.item()`` waits for it). The first step is
  timed apart; then the rest of the epoch's full batches, shuffled by
  ``seed``. Nothing is compiled: ``train_compiles`` is 0."""
  b = batch_size
  perm = np.random.default_rng(seed).permutation(n)
  first, _ = timed(lambda: step(perm[:b]).item())
  starts = range(b, n - b + 1, b)

  def rest():
    loss = None
    for start in starts:
      loss = step(perm[start:start + b])
    return None if loss is None else loss.item()
  secs, _ = timed(rest)
  return {"first_step_s": first, "train_seconds": secs,
          "train_samples": len(starts) * b, "train_compiles": 0}


def set_torch_threads() -> int:
  """PyTorch on as many threads as seqjax (``threads``); -> that number."""
  import torch
  torch.set_num_threads(threads())
  return torch.get_num_threads()


def jaxpr_matmul_flops(fn: Callable, *args) -> float:
  """FLOPs (2 per multiply-add) of every matmul ``fn(*args)`` runs, read
  from its jaxpr: a scan's body counted once per step, the other branches
  of a cond by their costliest. XLA's cost analysis counts a loop's body
  once, so it undercounts a scanned model several times over."""
  import jax
  return _jaxpr_flops(jax.make_jaxpr(fn)(*args).jaxpr)


def _subjaxprs(value):
  if hasattr(value, "eqns"):
    yield value
  elif hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):
    yield value.jaxpr
  elif isinstance(value, (tuple, list)):
    for v in value:
      yield from _subjaxprs(v)


def _dot_flops(eqn) -> float:
  (contract_a, _), _ = eqn.params["dimension_numbers"]
  shape_a = eqn.invars[0].aval.shape
  return 2.0 * float(np.prod(eqn.outvars[0].aval.shape)) * float(
      np.prod([shape_a[d] for d in contract_a]))


def _jaxpr_flops(jaxpr) -> float:
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      total += _dot_flops(eqn)
    elif name == "while":
      raise ValueError("a while loop's trip count is not in its jaxpr")
    subs = [_jaxpr_flops(j) for v in eqn.params.values()
            for j in _subjaxprs(v)]
    if name == "cond":
      total += max(subs, default=0.0)
    else:
      total += sum(subs) * (eqn.params["length"] if name == "scan" else 1)
  return total


def jax_matmul_gflops(n: int, reps: int = 3) -> float:
  """Best-of float32 (n, n) @ (n, n) with jitted JAX: the ceiling that JAX
  (so seqjax and Keras-JAX) reaches on this machine."""
  import jax
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda a, b: a @ b)
  f(a, a).block_until_ready()
  best = min(timed(lambda: f(a, a).block_until_ready())[0]
             for _ in range(reps))
  return 2 * n ** 3 / best / 1e9


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def load_average() -> Optional[list[float]]:
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except OSError:
    return None


def machine_info() -> dict:
  import jax
  return {"cpu": cpu_model(), "cores": os.cpu_count(),
          "platform": platform.platform(), "python": platform.python_version(),
          "jax_backend": jax.default_backend(),
          "jax_devices": [str(d) for d in jax.devices()],
          "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
          "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", ""),
          "cpu_affinity": sorted(os.sched_getaffinity(0))}


class _Ops:
  """What a worker does for the parent; timing happens here, in the worker."""

  def __init__(self, workload, runner):
    self.w, self.r = workload, runner
    self.decodes = measures_decoding(workload)
    self.src = workload.decode_sources() if self.decodes else []
    self.loop_src = self.src[:workload.loop_n]

  def _extras(self):
    return getattr(self.r, "extra_decoders", lambda: {})()

  def info(self) -> dict:
    return {"versions": self.r.versions(),
            "notes": list(getattr(self.r, "notes", []) or []),
            "checks": dict(getattr(self.r, "checks", {}) or {})}

  def warmup(self):  # compiles the decoders; not timed
    if not self.decodes:
      return
    self.r.decode_batched(self.src)
    self.r.decode_loop(self.loop_src[:2])
    for fn in self._extras().values():
      fn(self.loop_src[:2])

  def train_epoch(self, rep: int) -> dict:
    return self.r.train_epoch(rep)

  def decode(self, passes: int = 3) -> dict:
    """Seconds of: the batched decoding, the one-at-a-time loop, extras;
    each the best of ``passes`` (a pass is short: a load spike on a shared
    machine would otherwise decide it)."""
    best = lambda fn, src: min(timed(lambda: fn(src))[0] for _ in range(passes))
    out = {"decode_batched_s": best(self.r.decode_batched, self.src),
           "decode_loop_s": best(self.r.decode_loop, self.loop_src)}
    for name, fn in self._extras().items():
      out[f"{name}_s"] = best(fn, self.loop_src)
    return out

  def ceiling(self, n: int) -> float:
    return self.r.ceiling_gflops(n)

  def machine(self) -> dict:
    return machine_info()


SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
SINGLE_THREAD_XLA_FLAG = "--xla_cpu_multi_thread_eigen=false"


def use_one_thread() -> int:
  """Confines this process to one CPU, the first it may run on, before a
  framework is imported, and returns it. The environment and the XLA flag
  set the frameworks' thread counts, but XLA:CPU's matmuls run on a pool
  sized by the CPUs the process may use whatever that flag says (jax 0.10
  ran them on both cores of a 2-core machine), so the affinity is what
  makes one framework one thread."""
  os.environ.update(SINGLE_THREAD_ENV)
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " "
                             + SINGLE_THREAD_XLA_FLAG).strip()
  cpu = min(os.sched_getaffinity(0))
  os.sched_setaffinity(0, {cpu})
  return cpu


def measures_decoding(workload) -> bool:
  """Does the workload time decoding (a training-only one does not)?"""
  return getattr(workload, "measures_decoding", True)


def _worker_main(conn, module_name: str, settings: dict, framework: str,
                 single_thread: bool = False):
  """A framework's own process: builds its runner, then serves calls."""
  import importlib
  import traceback
  if single_thread:  # before any framework is imported
    use_one_thread()
  try:
    module = importlib.import_module(module_name)
    workload = module.Workload(module.Settings(**settings))
    # A workload module may serve its own calls (``Ops``: benchmarks.decode).
    ops = getattr(module, "Ops", _Ops)(workload, workload.runner(framework))
    conn.send(("ok", None))
  except BaseException:  # pylint: disable=broad-except
    conn.send(("error", traceback.format_exc()))
    return
  while True:
    try:
      message = conn.recv()
    except (EOFError, OSError):  # the parent is gone
      return
    if message is None:
      return
    name, args = message
    try:
      result = ("ok", getattr(ops, name)(*args))
    except BaseException:  # pylint: disable=broad-except
      result = ("error", traceback.format_exc())
    try:
      conn.send(result)
    except (BrokenPipeError, OSError):  # the parent is gone
      return


class WorkerError(RuntimeError):
  pass


class Worker:
  """One framework in its own process (spawned: no thread pool, allocator or
  compile cache is shared with another framework); idle while others run."""

  def __init__(self, module_name: str, settings: dict, framework: str,
               single_thread: bool = False):
    import multiprocessing
    ctx = multiprocessing.get_context("spawn")
    self.framework = framework
    self.conn, child = ctx.Pipe()
    self.process = ctx.Process(target=_worker_main, daemon=True,
                               args=(child, module_name, settings, framework,
                                     single_thread))
    self.process.start()
    child.close()
    self._receive()

  def _receive(self):
    try:
      status, value = self.conn.recv()
    except EOFError as e:
      raise WorkerError(f"the {self.framework} worker died (exit code "
                        f"{self.process.exitcode})") from e
    if status != "ok":
      raise WorkerError(f"{self.framework} worker failed:\n{value}")
    return value

  def call(self, name: str, *args):
    self.conn.send((name, args))
    return self._receive()

  def close(self):
    try:
      self.conn.send(None)
    except (BrokenPipeError, OSError):
      pass
    self.process.join(timeout=5)
    if self.process.is_alive():  # busy (an interrupted run): stop it
      self.process.kill()
      self.process.join()


def measure(workload, frameworks: list[str], reps: int,
            log: Callable[[str], None] = print, single_thread: bool = False,
            settle_s: float = 1.0) -> tuple[dict, list[str]]:
  """Runs every measurement ``reps`` times, frameworks interleaved, each in
  its own worker process (on one thread each with ``single_thread``).
  Returns ``({framework: {key: median, ..., "reps": {key: [...]}}}, notes)``;
  a peer whose worker cannot start is left out with a note."""
  workers, notes = start_workers(type(workload).__module__,
                                 dataclasses.asdict(workload.s), frameworks,
                                 single_thread, log)
  try:
    frameworks = list(workers)
    per_rep = {fw: {} for fw in frameworks}

    def add(fw, key, value):
      per_rep[fw].setdefault(key, []).append(value)

    def call(fw, *args):
      # A pause first: the framework measured before may leave threads
      # spinning for a while (seen after PyTorch's training: a decode run
      # right after it slowed by up to 2x).
      time.sleep(settle_s)
      return workers[fw].call(*args)

    for fw in frameworks:
      workers[fw].call("warmup")
    decodes = measures_decoding(workload)
    n_src = len(workload.decode_sources()) if decodes else 0
    n_loop = workload.loop_n
    for rep in range(reps):
      shift = rep % len(frameworks)
      order = frameworks[shift:] + frameworks[:shift]
      for fw in order:
        out = call(fw, "train_epoch", rep)
        for key, value in out.items():
          add(fw, key, value)
        rate = (out["train_samples"] / out["train_seconds"]
                if out["train_seconds"] > 0 else float("nan"))
        add(fw, "train_samples_per_s", rate)
        quality = ", ".join(
            f"{k.removeprefix('decode_')} {v:.4f}" for k, v in out.items()
            if k.startswith("decode_") or k == "train_loss")
        log(f"  rep {rep + 1}/{reps} {fw:8s} train {rate:9.0f} samples/s, "
            f"first step {out['first_step_s']:.2f} s, "
            f"compiles {out['train_compiles']}, {quality}")
      for fw in order if decodes else ():
        for key, secs in call(fw, "decode").items():
          n = n_src if key == "decode_batched_s" else n_loop
          add(fw, key[:-len("_s")] + "_seq_per_s", n / secs)
      for fw in order:
        add(fw, "ceiling_gflops", call(fw, "ceiling", workload.ceiling_n))
      if decodes:
        log(f"  rep {rep + 1}/{reps} decode seq/s: " + ", ".join(
            f"{fw} batched {per_rep[fw]['decode_batched_seq_per_s'][-1]:.0f}"
            f" loop {per_rep[fw]['decode_loop_seq_per_s'][-1]:.0f}"
            for fw in frameworks))
    results = {}
    for fw in frameworks:
      info = workers[fw].call("info")
      reps_fw = per_rep[fw]
      res = {key: median(values) for key, values in reps_fw.items()
             if key not in ("train_samples", "train_seconds")}
      res["train_compiles"] = int(max(reps_fw["train_compiles"]))
      res["gflops"] = (res["train_samples_per_s"]
                       * workload.train_flops_per_sample / 1e9)
      _add_executed(res, reps_fw, per_rep["seqjax"])
      res["versions"] = info["versions"]
      res["reps"] = reps_fw
      if info["notes"]:
        res["notes"] = info["notes"]
      if info["checks"]:
        res["checks"] = info["checks"]
      results[fw] = res
    results["seqjax"]["machine"] = workers["seqjax"].call("machine")
    return results, notes
  finally:
    for worker in workers.values():
      worker.close()


def _add_executed(res: dict, reps_fw: dict, ours: dict) -> None:
  """Where seqjax counted the matmul FLOPs its step executes (padding
  included), each repetition's achieved GFLOP/s at that count and its
  fraction of the ceiling measured in the same repetition. A peer trains
  the same model on the same padded batches: seqjax's count is its count."""
  flops = ours.get("executed_flops_per_sample")
  if not flops:
    return
  reps_fw["executed_flops_per_sample"] = [flops[0]] * len(flops)
  reps_fw["executed_gflops"] = [
      r * flops[0] / 1e9 for r in reps_fw["train_samples_per_s"]]
  reps_fw["ceiling_fraction"] = [
      g / c for g, c in zip(reps_fw["executed_gflops"],
                            reps_fw["ceiling_gflops"])]
  for key in ("executed_flops_per_sample", "executed_gflops",
              "ceiling_fraction"):
    res[key] = median(reps_fw[key])


def rep_ratios(results: dict, metric: str, peers: list[str],
               lower_is_better: bool = False, ours: str = "seqjax"
               ) -> list[float]:
  """Each repetition's ratio: ``ours``' number over the same repetition's
  best peer (for a metric where lower is better, the best peer's over
  ours)."""
  mine = results[ours]["reps"][metric]
  theirs = [results[p]["reps"][metric] for p in peers]
  out = []
  for i, value in enumerate(mine):
    row = [t[i] for t in theirs]
    out.append(min(row) / value if lower_is_better else value / max(row))
  return out


def ratios(results: dict, targets: list[tuple], ours: str = "seqjax"
           ) -> list[dict]:
  """``targets``: (metric, peers, at_least, lower_is_better). ``ratio`` is
  the median of the repetitions' ratios (``rep_ratios``), ``range`` their
  least and greatest; ``ratio_of_medians`` is kept for comparison."""
  rows = []
  mine = results.get(ours)
  for metric, peers, at_least, lower_is_better in targets:
    present = [p for p in peers if p in results]
    row = {"metric": metric, "vs": present, "target": at_least}
    if ours != "seqjax":
      row["ours"] = ours
    if mine is None or not present:
      row.update(ratio=None, met=None)
      rows.append(row)
      continue
    per_rep = rep_ratios(results, metric, present, lower_is_better, ours)
    if lower_is_better:
      best = min(results[p][metric] for p in present)
      of_medians = best / mine[metric]
    else:
      best = max(results[p][metric] for p in present)
      of_medians = mine[metric] / best
    ratio = median(per_rep)
    row.update(ratio=ratio, range=[min(per_rep), max(per_rep)],
               rep_ratios=per_rep, ratio_of_medians=of_medians,
               met=bool(ratio >= at_least), best_peer=best)
    rows.append(row)
  return rows


def format_table(results: dict) -> str:
  frameworks = list(results)
  fmt = {"train_samples_per_s": "{:.0f}", "first_step_s": "{:.3f}",
         "train_compiles": "{:d}", "decode_batched_seq_per_s": "{:.0f}",
         "decode_loop_seq_per_s": "{:.0f}", "gflops": "{:.1f}",
         "ceiling_gflops": "{:.1f}"}
  width = max(12, *(len(fw) + 2 for fw in frameworks))
  lines = [f"{'metric':26s}" + "".join(f"{fw:>{width}s}" for fw in frameworks)]
  for key in KEYS:
    cells = []
    for fw in frameworks:
      v = results[fw].get(key)
      cells.append("-" if v is None or (isinstance(v, float) and np.isnan(v))
                   else fmt[key].format(v))
    lines.append(f"{key:26s}" + "".join(f"{c:>{width}s}" for c in cells))
  return "\n".join(lines)


def format_ratios(rows: list[dict]) -> str:
  lines = []
  for row in rows:
    if row["ratio"] is None:
      lines.append(f"{row['metric']:26s} no peer measured")
      continue
    lo, hi = row["range"]
    label = row["metric"] + (f" ({row['ours']})" if "ours" in row else "")
    lines.append(f"{label:26s} {row['ratio']:6.2f}x "
                 f"({lo:.2f}-{hi:.2f}) vs best of "
                 f"{'/'.join(row['vs'])} (target >= {row['target']}x): "
                 f"{'met' if row['met'] else 'MISSED'}")
  return "\n".join(lines)


def start_workers(module_name: str, settings: dict, frameworks: list[str],
                  single_thread: bool, log=print) -> tuple[dict, list[str]]:
  """A ``Worker`` per framework -> (workers, notes): a peer that cannot
  start is skipped with a note; seqjax must start."""
  workers, notes = {}, []
  for fw in frameworks:
    try:
      workers[fw] = Worker(module_name, settings, fw, single_thread)
    except WorkerError as e:
      if fw == "seqjax":
        for worker in workers.values():
          worker.close()
        raise
      notes.append(f"peer {fw} skipped: {str(e).splitlines()[-1]}")
      log(f"Note: {notes[-1]}")
  return workers, notes


def rotate_decodes(workers: dict, reps: int, keys_of: Callable, n: int,
                   fields: tuple, log=print, settle_s: float = 1.0
                   ) -> tuple[dict, dict]:
  """Each repetition, every worker's ``decode`` of every key of
  ``keys_of(framework)``, the frameworks' order rotating -> (results: per
  framework its warm-up and per key the lists of sentences/s and
  ``fields``, and whether its tokens were the same every repetition; the
  last tokens per framework and key)."""
  frameworks = list(workers)
  results = {}
  for fw in frameworks:
    log(f"  warm-up {fw}")
    results[fw] = {"warmup": workers[fw].call("warmup"), "reps": {},
                   "same_tokens_every_rep": {}}
  tokens = {fw: {} for fw in frameworks}
  for rep in range(reps):
    shift = rep % len(frameworks)
    for fw in frameworks[shift:] + frameworks[:shift]:
      for key in keys_of(fw):
        time.sleep(settle_s)  # the previous framework's threads settle
        out = workers[fw].call("decode", key)
        runs = results[fw]["reps"].setdefault(
            key, {"sentences_per_s": [], **{k: [] for k in fields}})
        runs["sentences_per_s"].append(n / out["seconds"])
        for k in fields:
          runs[k].append(out[k])
        same = results[fw]["same_tokens_every_rep"]
        same[key] = same.get(key, True) and (
            key not in tokens[fw]
            or np.array_equal(tokens[fw][key], out["tokens"]))
        tokens[fw][key] = out["tokens"]
        log(f"  rep {rep + 1}/{reps} {fw:10s} {key:18s} "
            f"{n / out['seconds']:9.1f} sentences/s, {out['steps']} steps")
  for res in results.values():
    res["median"] = {key: {k: median(v) for k, v in runs.items()}
                     for key, runs in res["reps"].items()}
  return results, tokens
