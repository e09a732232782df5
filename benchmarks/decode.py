"""The decode workload: greedy and beam search speed, seqjax against PyTorch
and OpenNMT-py (issue 15).

  python -m benchmarks.run --workload=decode --peers=torch --single_thread \\
      --settings=model_dir=/work/runs/attention_word
  python -m benchmarks.run --workload=decode --peers=onmt --single_thread \\
      --settings=steps=20

The model: a trained translate workdir (``model_dir``) and the 1,000 test
sentences of its random split, prepared as ``experiments.translate`` does;
else a random model of the translate attention model's sizes (``units``,
``embedding_dim``) on the same split's test sentences, run for ``steps``
(equal work) or, with ``stop_bias`` (its stop symbol's readout bias
raised; ``readout_scale``), to its stop symbol or ``random_max_len``;
``tiny``: a small random model (readout sharpened, end symbol's bias
raised, so outputs end at varied steps) on random sentences, for tests.

The peers (``benchmarks/decode_torch.py``, ``benchmarks/decode_onmt.py``):

* ``torch``: greedy and batched beam search of the same model with the
  same weights, written as a PyTorch NMT toolkit writes them (a finished
  sentence leaves the batch); its outputs equal seqjax's up to float32 ties;
* ``onmt``: OpenNMT-py's own model of the same sizes (``onmt_h512``,
  ``onmt_h256``: its decoder is as wide as its whole encoder) decoded by
  its own ``Translator``; benchmark-only (``pip install --no-deps
  OpenNMT-py==3.5.1 configargparse six pyonmttok``).

``steps`` > 0 is equal work: every decoder runs that many steps for every
sentence (no stop symbol; OpenNMT-py with min_length = max_length), as
random weights decide output lengths; OpenNMT-py then also decodes with its
end symbol allowed (``natural``, not compared). seqjax pads every batch to
the widest source and the last to the batch size (one compiled shape); the
peers cut each batch to its widest source. seqjax greedy and beam search
also decode in-flight (``in_flight``; ``greedy_inflight@50``,
``beam5_inflight@50``): all sentences in one queue, the batch size its
slots (of K rows for beam search), a finished sentence's slot refilled
with the next inside the compiled loop (``seqjax.decoding.inflight``,
``seqjax.decoding.inflight_beam``).
``beam=false`` measures greedy alone. Every framework runs in its own
worker process, the order rotating each repetition; every number is the
median over repetitions.
"""

from __future__ import annotations

import dataclasses
import importlib
import os

import numpy as np

from seqjax.data import vocab as vocab_lib
from seqjax.errors import ParameterError, SeqjaxError

from benchmarks import harness

NAME = "decode"
START, STOP, PAD = vocab_lib.START_ID, vocab_lib.END_ID, vocab_lib.PAD_ID
TARGETS = {"beam_vs_peer": 5.0,       # seqjax beam / a peer's beam, at least
           "beam_over_greedy": 4.0}   # seqjax beam time / greedy, at most
DEFINITIONS = [
    "sentences/s: the sentences over the seconds of one pass over all of "
    "them in batches (the best of `passes` passes), after a warm-up call "
    "per decoder and batch size; the median over repetitions",
    "first call: one batch decoded by a fresh decoder (seqjax: tracing, "
    "XLA's compiles and the run; in-flight: the whole queue)",
    "steps: decoder steps run, summed over the batches; rows stepped: the "
    "rows those steps decoded (batch x beams, less what a peer dropped)",
    "equal work (steps > 0): every decoder runs `steps` steps for every "
    "sentence",
    "ratio: each repetition's own, their median and range; seqjax beam time "
    "/ greedy time is greedy's sentences/s over beam's"]


@dataclasses.dataclass
class Settings:
  model_dir: str = ""      # a trained translate workdir; empty: random
  data_path: str = ""      # empty: $SEQJAX_CMN_PATH, else ../shared/...
  steps: int = 0           # > 0: equal work, every sentence this many steps
  beam_size: int = 5
  length_penalty: float = 0.6  # GNMT's alpha (Wu et al. 2016)
  batches: str = "50/256"  # batch sizes, "/"-separated
  num_sentences: int = 0   # 0: all
  passes: int = 3          # timed passes per repetition (the best kept)
  natural: bool = True     # onmt with equal work: also its own stopping
  in_flight: bool = True   # seqjax also in-flight (greedy_inflight, ...)
  beam: bool = True        # False: greedy only
  onmt_hidden: str = "512/256"  # OpenNMT-py -hidden_size values
  # The random model (without model_dir): the translate attention model.
  units: int = 256
  embedding_dim: int = 128
  cell: str = "lstm"
  bidirectional: bool = True
  attention: str = "luong"
  attention_score: str = "general"
  input_feeding: bool = True
  # A random model decoding to its stop symbol (steps=0): max_decode_len,
  # and the readout sharpened and the stop symbol's bias raised so that
  # outputs end at varied steps.
  random_max_len: int = 45
  readout_scale: float = 1.0
  stop_bias: float = 0.0
  tiny: bool = False       # tests: the sizes below, random sentences
  tiny_units: int = 16
  tiny_embedding_dim: int = 8
  tiny_src_vocab: int = 30
  tiny_tgt_vocab: int = 24
  tiny_max_len: int = 12
  tiny_sentences: int = 24
  tiny_readout_scale: float = 6.0
  tiny_stop_bias: float = 0.5
  seed: int = 0

  def batch_sizes(self) -> list[int]:
    return _sizes("batches", self.batches)

  def onmt_sizes(self) -> list[int]:
    return _sizes("onmt_hidden", self.onmt_hidden)


def _sizes(name: str, text: str) -> list[int]:
  try:
    sizes = [int(b) for b in text.split("/") if b.strip()]
  except ValueError as e:
    raise ParameterError(name, text, "must be sizes separated by '/', e.g. "
                         "50/256") from e
  if not sizes or min(sizes) < 1:
    raise ParameterError(name, text, "must be positive sizes separated by "
                         "'/'")
  return sizes


def decoder_names(s: Settings) -> list[str]:
  return ["greedy"] + ([f"beam{s.beam_size}"] if s.beam else [])


def keys(s: Settings, framework: str = "seqjax") -> list[str]:
  """Its measurements: ``greedy@50``, ``beam5@50``, ...; OpenNMT-py with
  equal work and ``natural`` also ``greedy_natural@50``, ...."""
  out = [f"{d}@{b}" for b in s.batch_sizes() for d in decoder_names(s)]
  if framework == "seqjax" and s.in_flight:
    out += [f"{d}_inflight@{b}" for b in s.batch_sizes()
            for d in decoder_names(s)]
  if framework.startswith("onmt") and s.steps and s.natural:
    out += [f"{d}_natural@{s.batch_sizes()[0]}" for d in decoder_names(s)]
  return out


def framework_names(s: Settings, peers) -> list[str]:
  onmt = [f"onmt_h{h}" for h in s.onmt_sizes()] if "onmt" in peers else []
  return ["seqjax"] + (["torch"] if "torch" in peers else []) + onmt


class Workload:
  """The seqjax model and its parameters (which the PyTorch peer copies),
  the sentences and the decoding bounds; built identically in every
  worker process."""

  name = NAME

  def __init__(self, settings: Settings):
    self.s = s = settings
    s.batch_sizes()
    s.onmt_sizes()  # refuses bad sizes before any work
    for name in ("passes", "beam_size"):
      if getattr(s, name) < 1:
        raise ParameterError(name, getattr(s, name), "must be at least 1")
    if s.steps < 0:
      raise ParameterError("steps", s.steps, "must be >= 0")
    if not s.model_dir and not s.tiny and not s.steps and not s.stop_bias:
      raise ParameterError("steps", s.steps, "must be > 0 (equal work) for "
                           "a random model, whose outputs have random "
                           "lengths; or give model_dir, or a stop_bias")
    if s.model_dir:
      self._load_trained(s)
    else:
      self._build_random(s)
    self.max_len = s.steps or self.max_len
    self.stop_id = None if s.steps else STOP
    from seqjax import decoding
    decoding.check_beam(s.beam_size, 1, s.length_penalty, self.tgt_vocab)
    n = s.num_sentences or len(self.src_NS)
    self.src_NS, self.mask_NS = self.src_NS[:n], self.mask_NS[:n]

  def _load_trained(self, s: Settings):
    from seqjax import translation
    tr = translation.load_translator(s.model_dir)
    spec, arch = tr.spec, tr.spec.settings
    if arch.encoder_layers != 1 or arch.decoder_layers != 1:
      raise SeqjaxError(f"{s.model_dir}: the PyTorch peer has one layer "
                        "each side; this model has more")
    if not spec.teacher_forcing:
      raise SeqjaxError(f"{s.model_dir}: a model trained without teacher "
                        "forcing is decoded on its softmax, not beamed")
    self.model, self.params = tr.model, tr.params
    self.arch = dict(cell=arch.cell, units=arch.units,
                     embedding_dim=arch.embedding_dim,
                     bidirectional=arch.bidirectional,
                     attention=arch.attention,
                     attention_score=arch.attention_score,
                     input_feeding=arch.input_feeding)
    self.src_vocab, self.tgt_vocab = len(tr.vocabs.source), len(
        tr.vocabs.target)
    self.max_len = tr.vocabs.max_decode_len
    self._test_set(s, dict(level=spec.level, cell=arch.cell,
                           latent_dim=arch.units,
                           **(tr.vocabs.data or {})), tr.vocabs)
    self.description.update(model_dir=os.path.abspath(s.model_dir),
                            step=tr.step, spec=dataclasses.asdict(spec))

  def _test_set(self, s: Settings, flags: dict, restored=None):
    """The held-out sentences as the translate binary prepares them."""
    from experiments import translate
    config = translate.TranslateConfig(data_path=s.data_path, **flags)
    prepared = translate.prepare_data(config, restored=restored)
    held_out = prepared.reported
    self.src_NS = np.asarray(held_out.decode_arrays["src"], np.int32)
    self.mask_NS = np.asarray(held_out.decode_arrays["src_mask"], bool)
    self.description = {"data": translate.resolve_data_path(s.data_path),
                        "set": f"{held_out.name}: {len(held_out.sources)} "
                               "sentences"}
    return prepared

  def _build_random(self, s: Settings):
    import jax
    from seqjax.models import ModelSettings, Seq2Seq
    units, emb = ((s.tiny_units, s.tiny_embedding_dim) if s.tiny
                  else (s.units, s.embedding_dim))
    self.arch = dict(cell=s.cell, units=units, embedding_dim=emb,
                     bidirectional=s.bidirectional, attention=s.attention,
                     attention_score=s.attention_score,
                     input_feeding=s.input_feeding)
    if s.tiny:
      self._tiny_sentences(s)
    else:
      prepared = self._test_set(s, dict(level="word", split="random",
                                        split_seed=0, latent_dim=units,
                                        embedding_dim=emb))
      self.src_vocab = len(prepared.src_vocab)
      self.tgt_vocab = len(prepared.tgt_vocab)
      self.max_len = s.steps or s.random_max_len
    self.model = Seq2Seq(src_vocab=self.src_vocab, tgt_vocab=self.tgt_vocab,
                         settings=ModelSettings(**self.arch))
    params = jax.jit(self.model.init)(jax.random.key(s.seed),
                                      self.src_NS[:1], self.src_NS[:1, :2])
    self.params = jax.tree.map(np.asarray, params)
    readout = self.params["params"]["readout"]
    scale, bias = ((s.tiny_readout_scale, s.tiny_stop_bias) if s.tiny
                   else (s.readout_scale, s.stop_bias))
    readout["kernel"] = readout["kernel"] * scale
    readout["bias"] = readout["bias"].copy()
    readout["bias"][STOP] += bias

  def _tiny_sentences(self, s: Settings):
    self.src_vocab, self.tgt_vocab = s.tiny_src_vocab, s.tiny_tgt_vocab
    self.max_len = s.tiny_max_len
    rng = np.random.default_rng(s.seed)
    n, width = s.tiny_sentences, 8
    lengths_N = rng.integers(1, width + 1, size=n)
    # Real ids only (no pad, start, end, unknown), padding too: only the
    # mask may hide it.
    self.src_NS = rng.integers(4, self.src_vocab, size=(n, width)).astype(
        np.int32)
    self.mask_NS = np.arange(width)[None] < lengths_N[:, None]
    self.description = {"tiny": True, "sentences": n, "source_width": width}

  def runner(self, framework: str):
    if framework == "seqjax":
      return SeqjaxRunner(self)
    if framework == "torch":
      return importlib.import_module("benchmarks.decode_torch").Runner(self)
    hidden = int(framework.rsplit("_h", 1)[1])
    return importlib.import_module("benchmarks.decode_onmt").Runner(
        self, hidden)

  def batches(self, batch: int):
    """(start, stop) of every batch of ``batch`` sentences, in order."""
    n = len(self.src_NS)
    return [(i, min(i + batch, n)) for i in range(0, n, batch)]

  def model_info(self) -> dict:
    import jax
    n = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(self.params))
    return {**self.description, "architecture": self.arch,
            "src_vocab": self.src_vocab, "tgt_vocab": self.tgt_vocab,
            "parameters": n, "max_decode_len": self.max_len,
            "sentences": len(self.src_NS),
            "source_width": int(self.src_NS.shape[1]),
            "mean_source_length": float(self.mask_NS.sum(1).mean()),
            "max_source_length": int(self.mask_NS.sum(1).max())}


class SeqjaxRunner:
  """seqjax's greedy and beam decoders, jitted once per batch shape; every
  batch padded to ``batch`` rows, all dispatched before the first is
  fetched."""

  framework = "seqjax"

  def __init__(self, w: Workload):
    import jax
    self.w, s = w, w.s
    ids = dict(max_len=w.max_len, start_id=START, stop_id=w.stop_id,
               pad_id=PAD)
    self.params = jax.device_put(w.params)
    self.fns = {"greedy": harness.library_decoder(w.model, "greedy_steps",
                                                  **ids),
                f"beam{s.beam_size}": harness.library_decoder(
                    w.model, "beam", beam_size=s.beam_size,
                    length_penalty=s.length_penalty, **ids),
                "greedy_inflight": harness.library_decoder(
                    w.model, "greedy_inflight", **ids),
                f"beam{s.beam_size}_inflight": harness.library_decoder(
                    w.model, "beam_inflight", beam_size=s.beam_size,
                    length_penalty=s.length_penalty, **ids)}
    self.notes = ["seqjax: every batch padded to the widest source of all "
                  f"({w.src_NS.shape[1]} tokens) and its last batch to the "
                  "batch size (one compiled shape per batch size); "
                  "in-flight: all sentences in one queue (padded to "
                  "a multiple of the batch size) ordered by source "
                  "length and encoded in chunks of their own width, the "
                  "batch size its slots (of K rows for beam search), a "
                  "finished sentence's slot refilled with the next "
                  "inside the compiled loop"]

  def versions(self) -> dict:
    return harness.seqjax_versions()

  def model_info(self) -> dict:
    return {"parameters": self.w.model_info()["parameters"],
            "class": "seqjax.models.Seq2Seq",
            "sizes": ", ".join(f"{k} {v}" for k, v in self.w.arch.items())}

  def _padded(self, start: int, stop: int, batch: int):
    src, mask = self.w.src_NS[start:stop], self.w.mask_NS[start:stop]
    short = batch - len(src)
    if short:
      src = np.concatenate([src, np.repeat(src[-1:], short, 0)])
      mask = np.concatenate([mask, np.repeat(mask[-1:], short, 0)])
    return src, mask

  def decode(self, decoder: str, batch: int) -> tuple[np.ndarray, int, int]:
    """-> tokens (N, max_len), decoder steps (summed over the batches),
    rows stepped (rows x steps, summed)."""
    fn, w = self.fns[decoder], self.w
    if decoder.endswith("_inflight"):
      tokens_NT, steps, rows = fn(self.params, w.src_NS, w.mask_NS, batch)
      return np.asarray(tokens_NT), int(steps), int(rows)
    k = 1 if decoder == "greedy" else w.s.beam_size
    outs = [(fn(self.params, *self._padded(a, b, batch)), b - a)
            for a, b in w.batches(batch)]
    tokens, steps = [], 0
    for (tokens_BT, steps_), n in outs:
      tokens.append(np.asarray(tokens_BT)[:n])
      steps += int(steps_)
    return np.concatenate(tokens), steps, steps * batch * k

  def first_call(self, decoder: str, batch: int) -> dict:
    """The first call on one batch (trace, compile, run) and its XLA
    compiles."""
    from seqjax import train as train_lib
    a, b = self.w.batches(batch)[0]
    call = lambda: self.fns[decoder](self.params, *self._padded(a, b, batch))
    if decoder.endswith("_inflight"):  # its one call: the whole queue
      call = lambda: self.decode(decoder, batch)
    with train_lib.count_compiles() as counted:
      secs, _ = harness.timed(lambda: np.asarray(call()[0]))
      compiles = counted.count
    return {"first_call_s": secs, "compiles": compiles}


class Ops:
  """What a worker does for the parent (``harness`` serves it)."""

  def __init__(self, workload: Workload, runner):
    self.w, self.r = workload, runner

  def info(self) -> dict:
    return {"versions": self.r.versions(), "model": self.r.model_info(),
            "notes": list(self.r.notes)}

  def warmup(self) -> dict:
    """Each decoder's first call for each batch size (not in the rates)."""
    out = {}
    for key in keys(self.w.s, self.r.framework):
      decoder, batch = key.split("@")
      out[key] = self.r.first_call(decoder, int(batch))
    return out

  def decode(self, key: str) -> dict:
    """All sentences decoded ``passes`` times: the best pass' seconds, the
    tokens, decoder steps and rows stepped."""
    decoder, batch = key.split("@")
    best = None
    for _ in range(self.w.s.passes):
      secs, (tokens, steps, rows) = harness.timed(
          lambda: self.r.decode(decoder, int(batch)))
      best = secs if best is None else min(best, secs)
    return {"seconds": best, "tokens": tokens, "steps": steps,
            "rows_stepped": rows}

  def machine(self) -> dict:
    return harness.machine_info()


# ------------------------------------------------------------ measurement


def agreement(a_NT: np.ndarray, b_NT: np.ndarray) -> float:
  """The fraction of sentences whose token rows are equal."""
  return float(np.mean(np.all(a_NT == b_NT, axis=1)))


def output_lengths(tokens_NT: np.ndarray, stop: int = STOP) -> np.ndarray:
  """Tokens up to and with the end symbol (all where there is none)."""
  ends_NT = tokens_NT == stop
  return np.where(ends_NT.any(1), ends_NT.argmax(1) + 1, tokens_NT.shape[1])


def measure_workload(workload: Workload, peers: list[str], reps: int,
                     single_thread: bool, log=print, settle_s: float = 1.0):
  """``benchmarks.run``'s entry point: every framework in its own worker,
  each repetition all its measurements, the order rotating; prints the
  tables -> (the run's entry, machine facts, notes)."""
  s, n = workload.s, len(workload.src_NS)
  frameworks = framework_names(s, peers)
  log(f"Frameworks: {', '.join(frameworks)}; {reps} repetitions")
  workers, notes = harness.start_workers(__name__, dataclasses.asdict(s),
                                         frameworks, single_thread, log)
  try:
    results, tokens = harness.rotate_decodes(
        workers, reps, lambda fw: keys(s, fw), n,
        ("seconds", "steps", "rows_stepped"), log, settle_s)
    for fw, res in results.items():
      res.update(workers[fw].call("info"))
      stop = 3 if fw.startswith("onmt") else STOP  # OpenNMT-py's eos
      res["mean_output_length"] = {
          key: float(np.mean(output_lengths(t, stop)))
          for key, t in tokens[fw].items()}
      if s.steps:
        res["equal_work"] = {
            key: all(x == s.steps * len(workload.batches(int(key.split(
                "@")[1]))) for x in res["reps"][key]["steps"])
            for key in res["reps"] if "_natural" not in key}
    machine = workers["seqjax"].call("machine")
  finally:
    for worker in workers.values():
      worker.close()
  entry = {"kind": NAME, "settings": dataclasses.asdict(s),
           "single_thread": single_thread, "reps": reps,
           "model": workload.model_info(), "results": results,
           "agreement": agreements(workload, tokens)}
  entry["ratios"] = ratio_rows(workload, results)
  log("")
  for line in (table_lines(entry) + [""] + ratio_lines(entry) + [""]
               + agreement_lines(entry)):
    log(line)
  return entry, machine, notes


def agreements(workload: Workload, tokens: dict) -> dict:
  """Fractions of sentences with equal tokens: each seqjax decoder against
  PyTorch's (same weights) at the same batch size; seqjax's across batch
  sizes; greedy against beam."""
  s, out = workload.s, {}
  sizes, beam = s.batch_sizes(), f"beam{s.beam_size}"
  ours = tokens["seqjax"]
  for key in keys(s):
    if key in tokens.get("torch", {}):
      out[f"seqjax vs torch {key}"] = agreement(ours[key],
                                                tokens["torch"][key])
  for d in decoder_names(s):
    for b in sizes[1:]:
      out[f"seqjax {d}@{sizes[0]} vs {d}@{b}"] = agreement(
          ours[f"{d}@{sizes[0]}"], ours[f"{d}@{b}"])
  for b in sizes:
    for d in decoder_names(s):
      if f"{d}_inflight@{b}" in ours:
        out[f"seqjax {d}_inflight@{b} vs {d}@{b}"] = agreement(
            ours[f"{d}_inflight@{b}"], ours[f"{d}@{b}"])
  if s.beam:
    out[f"seqjax greedy vs {beam} @{sizes[0]}"] = agreement(
        ours[f"greedy@{sizes[0]}"], ours[f"{beam}@{sizes[0]}"])
  return out


def ratio_rows(workload: Workload, results: dict) -> list[dict]:
  """Per batch size: seqjax beam time over its greedy time (at most 4x),
  its greedy and beam in-flight over the fixed batch's (no target); per
  peer seqjax beam and beam in-flight over the peer's beam (sentences/s,
  at least 5x), seqjax greedy and greedy in-flight over the peer's greedy
  (no target). Those measured only; each
  repetition's own ratio, their median and range."""
  beam = f"beam{workload.s.beam_size}"
  rate = lambda fw, key: results[fw]["reps"][key]["sentences_per_s"]
  rows = []
  for b in workload.s.batch_sizes():
    g, k = f"greedy@{b}", f"{beam}@{b}"
    q, kq = f"greedy_inflight@{b}", f"{beam}_inflight@{b}"
    specs = [("seqjax beam time / seqjax greedy time", "seqjax", g, "seqjax",
              k, TARGETS["beam_over_greedy"], "at_most"),
             ("seqjax greedy in-flight / seqjax greedy (sentences/s)",
              "seqjax", q, "seqjax", g, None, None),
             ("seqjax beam in-flight / seqjax beam (sentences/s)",
              "seqjax", kq, "seqjax", k, None, None)]
    for peer in (fw for fw in results if fw != "seqjax"):
      specs += [(f"seqjax beam / {peer} beam (sentences/s)", "seqjax", k,
                 peer, k, TARGETS["beam_vs_peer"], "at_least"),
                (f"seqjax greedy / {peer} greedy (sentences/s)", "seqjax", g,
                 peer, g, None, None),
                (f"seqjax greedy in-flight / {peer} greedy (sentences/s)",
                 "seqjax", q, peer, g, None, None),
                (f"seqjax beam in-flight / {peer} beam (sentences/s)",
                 "seqjax", kq, peer, k, TARGETS["beam_vs_peer"],
                 "at_least")]
    measured = lambda fw, key: key in results[fw]["reps"]
    specs = [x for x in specs if measured(x[1], x[2]) and measured(x[3],
                                                                   x[4])]
    for label, fw_a, key_a, fw_b, key_b, target, kind in specs:
      per_rep = [x / y for x, y in zip(rate(fw_a, key_a), rate(fw_b, key_b))]
      ratio = harness.median(per_rep)
      met = None if target is None else bool(
          ratio >= target if kind == "at_least" else ratio <= target)
      rows.append({"metric": label, "batch": b, "target": target,
                   "kind": kind, "ratio": ratio,
                   "range": [min(per_rep), max(per_rep)],
                   "rep_ratios": per_rep, "met": met})
  return rows


# ----------------------------------------------------------------- output


def table_lines(entry: dict) -> list[str]:
  """Rates, steps, output lengths and first calls as Markdown rows: one
  row per measure and decoder, one column per framework."""
  res = entry["results"]
  lines = ["| decoder | batch | " + " | ".join(res) + " |",
           "| --- | ---: | " + " | ".join("---:" for _ in res) + " |"]
  all_keys = []
  for fw in res:
    all_keys += [k for k in res[fw]["median"] if k not in all_keys]
  med = lambda fw, k: res[fw]["median"][k]
  measures = [
      ("sentences/s", lambda fw, k: f"{med(fw, k)['sentences_per_s']:,.1f}"),
      ("steps / rows", lambda fw, k: f"{med(fw, k)['steps']:,.0f}" + (
          f" / {med(fw, k)['rows_stepped']:,.0f}"
          if "rows_stepped" in med(fw, k) else "")),
      ("mean output length",
       lambda fw, k: f"{res[fw]['mean_output_length'][k]:.2f}"),
      ("first call s", lambda fw, k: _first_call(res[fw]["warmup"][k]))]
  if any("longest_output_steps" in r for r in res.values()):  # older runs
    measures.insert(2, ("steps had batches stopped at their longest output",
                        lambda fw, k: f"{res[fw]['longest_output_steps'][k]:,}"))
  for label, fmt in measures:
    for key in all_keys:
      decoder, batch = key.split("@")
      lines.append(f"| {label}: {decoder} | {batch} | " + " | ".join(
          fmt(fw, key) if key in res[fw]["median"] else "-"
          for fw in res) + " |")
  if any("model" in res[fw] for fw in res):
    lines += ["", "| model | parameters | sizes |", "| --- | ---: | --- |"]
  lines += [f"| {fw} | {res[fw]['model']['parameters']:,} | "
            f"{res[fw]['model']['sizes']} |" for fw in res
            if "model" in res[fw]]
  return lines


def _first_call(warm: dict) -> str:
  if not warm.get("compiles"):
    return f"{warm['first_call_s']:.2f}"
  if "compile_s" in warm:  # older runs timed the compiles
    return f"{warm['first_call_s']:.2f} (compile {warm['compile_s']:.2f})"
  return f"{warm['first_call_s']:.2f} ({warm['compiles']} compiles)"


def ratio_lines(entry: dict) -> list[str]:
  out = []
  for row in entry["ratios"]:
    lo, hi = row["range"]
    target = ("no target" if row["target"] is None else
              f"target {'>=' if row['kind'] == 'at_least' else '<='} "
              f"{row['target']:g}x: {'met' if row['met'] else 'MISSED'}")
    out.append(f"- {row['metric']}, batch {row['batch']}: "
               f"{row['ratio']:.2f}x (range {lo:.2f}-{hi:.2f}; per rep "
               + " / ".join(f"{r:.2f}" for r in row["rep_ratios"])
               + f"), {target}")
  return out


def agreement_lines(entry: dict) -> list[str]:
  return [f"- {k}: {v * 100:.1f}% of sentences, token for token"
          for k, v in entry["agreement"].items()]


def markdown_lines(name: str, entry: dict) -> list[str]:
  """RESULTS.md's section of a run's decode workload."""
  res, s = entry["results"], entry["settings"]
  m = entry.get("model") or entry["data"]  # "data": runs before 2026-12-07
  threads = ("one thread per framework (--single_thread)"
             if entry.get("single_thread") else "each framework's default")
  work = (f"every decoder {s['steps']} steps a sentence (equal work)"
          if s.get("steps") else f"max_decode_len {m['max_decode_len']}")
  lines = ["", f"### {name} ({threads})", "",
           "- versions: " + "; ".join(
               f"{fw}: " + ", ".join(f"{k} {v}" for k, v in
                                     res[fw]["versions"].items())
               for fw in res),
           f"- {m['sentences']:,} sentences (mean source length "
           f"{m['mean_source_length']:.2f}, padded width "
           f"{m['source_width']}), {m['src_vocab']:,} source / "
           f"{m['tgt_vocab']:,} target symbols; {work}",
           f"- beam_size {s['beam_size']}, length_penalty "
           f"{s['length_penalty']:g}, {entry['reps']} repetitions of "
           f"{s['passes']} timed pass(es)"]
  lines += [f"- {note}" for fw in res for note in res[fw].get("notes", [])]
  lines += [""] + table_lines(entry)
  lines += ["", "Ratios (each repetition's own; their median, range and "
            "values):", ""] + ratio_lines(entry)
  if entry.get("agreement"):
    lines += ["", "Agreement:", ""] + agreement_lines(entry)
  return lines
