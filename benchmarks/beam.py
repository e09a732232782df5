"""The beam workload: decoding speed of greedy and beam search (issue 15).

  python -m benchmarks.run --workload=beam --single_thread \\
      --settings=model_dir=/work/runs/attention_word

Four decoders of one model, each over the same sentences in the same
batches: seqjax greedy and seqjax beam search
(``seqjax.decoding.make_decoder`` with ``full=True``: the tokens and the
step count), against PyTorch greedy and PyTorch batched beam search of the
same model with the same weights (``benchmarks/beam_torch.py``). Each rate
is sentences/s over all the sentences after a warm-up call (seqjax's
compile, timed and reported apart); every repetition times each decoder
once per batch size, the frameworks taking turns in their own worker
processes (the order rotating), and every number is the median over
repetitions.

With ``model_dir`` (a trained translate workdir, ``load_translator``) the
model is that one and the sentences are the 1,000 test sentences of its
random split, prepared as ``experiments.translate`` prepares them (its
vocabularies; ``--data_path``, else ``$SEQJAX_CMN_PATH``, else
``../shared/data/cmn-eng/cmn.txt``), so outputs have realistic lengths.
Without it (the tiny setting, for tests): a small randomly initialised
model of the same architecture (its readout sharpened and its end symbol's
bias raised, so hypotheses end at varied steps) on a few random sentences.

The frameworks decode as each is used: seqjax pads every batch to the
test set's widest source (``decode_in_batches``: one compiled shape, the
last batch filled up with copies of its last row) and runs every row of a
batch until all can stop; PyTorch cuts each batch to its own widest source
and, as NMT toolkits do, drops a sentence from the batch once its search
is over. Both stop exactly when no live hypothesis can beat the kept ones
(``seqjax.decoding.beam``'s bound), so their outputs agree up to float32 ties.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import time

import numpy as np

from seqjax.data import vocab as vocab_lib
from seqjax.errors import ParameterError, SeqjaxError

from benchmarks import harness

NAME = "beam"
PEERS = {"torch": "benchmarks.beam_torch"}
START, STOP, PAD = vocab_lib.START_ID, vocab_lib.END_ID, vocab_lib.PAD_ID
TARGETS = {"beam_vs_torch": 5.0,        # seqjax beam / PyTorch beam, at least
           "beam_over_greedy": 4.0}     # seqjax beam time / greedy, at most
DEFINITIONS = [
    "sentences/s: the sentences decoded over the seconds of one pass over "
    "all of them in batches (the best of `passes` passes), after a warm-up "
    "call per decoder and batch size; the median over repetitions",
    "first call: one batch decoded by a fresh decoder (seqjax: tracing, "
    "XLA's compiles, of which compile counts the backend's, and the run)",
    "steps: decoder steps run, summed over the batches; rows stepped: the "
    "rows those steps decoded (batch x beams, less what PyTorch dropped)",
    "ratio: each repetition's own, their median and range; seqjax beam time "
    "/ greedy time is greedy's sentences/s over beam's"]


@dataclasses.dataclass
class Settings:
  model_dir: str = ""      # a trained translate workdir; empty: tiny model
  data_path: str = ""      # with model_dir: empty is $SEQJAX_CMN_PATH, ...
  beam_size: int = 5
  length_penalty: float = 0.6  # GNMT's alpha (Wu et al. 2016)
  batches: str = "50/256"  # batch sizes, "/"-separated
  num_sentences: int = 0   # 0: all (1,000 test sentences; tiny: 24)
  passes: int = 3          # timed passes per repetition (the best kept)
  # The tiny model (without model_dir): the translate attention model's
  # architecture at these sizes.
  cell: str = "lstm"
  bidirectional: bool = True
  attention: str = "luong"
  attention_score: str = "general"
  input_feeding: bool = True
  tiny_units: int = 16
  tiny_embedding_dim: int = 8
  tiny_src_vocab: int = 30
  tiny_tgt_vocab: int = 24
  tiny_max_len: int = 12
  tiny_readout_scale: float = 6.0
  tiny_stop_bias: float = 0.5
  seed: int = 0

  def batch_sizes(self) -> list[int]:
    try:
      sizes = [int(b) for b in self.batches.split("/") if b.strip()]
    except ValueError as e:
      raise ParameterError("batches", self.batches, "must be batch sizes "
                           "separated by '/', e.g. 50/256") from e
    if not sizes or min(sizes) < 1:
      raise ParameterError("batches", self.batches, "must be positive "
                           "batch sizes separated by '/'")
    return sizes


def decoder_names(s: Settings) -> list[str]:
  return ["greedy", f"beam{s.beam_size}"]


def keys(s: Settings) -> list[str]:
  """One measurement per decoder and batch size: ``greedy@50``, ..."""
  return [f"{d}@{b}" for b in s.batch_sizes() for d in decoder_names(s)]


class Workload:
  """The model (seqjax ``Seq2Seq`` and its parameters, which the PyTorch
  peer copies), its architecture, the sentences and decoding bounds; built
  identically in every worker process."""

  name = NAME

  def __init__(self, settings: Settings):
    self.s = s = settings
    s.batch_sizes()  # refuses bad sizes before any work
    if s.passes < 1:
      raise ParameterError("passes", s.passes, "must be at least 1")
    if s.model_dir:
      self._load_trained(s)
    else:
      self._build_tiny(s)
    from seqjax import decoding
    decoding.check_beam(s.beam_size, 1, s.length_penalty, self.tgt_vocab)
    n = s.num_sentences or len(self.src_NS)
    self.src_NS, self.mask_NS = self.src_NS[:n], self.mask_NS[:n]
    self.sentences = self.sentences[:n]

  def _load_trained(self, s: Settings):
    from experiments import translate
    from seqjax import translation
    tr = translation.load_translator(s.model_dir)
    spec = tr.spec
    if spec.encoder_layers != 1 or spec.decoder_layers != 1:
      raise SeqjaxError(f"{s.model_dir}: the PyTorch peer has one layer "
                        "each side; this model has more")
    if not spec.teacher_forcing:
      raise SeqjaxError(f"{s.model_dir}: a model trained without teacher "
                        "forcing is decoded on its softmax, not beamed")
    # The data the model was trained on, prepared as the binary does.
    config = translate.TranslateConfig(
        data_path=s.data_path, level=spec.level, cell=spec.cell,
        latent_dim=spec.latent_dim, **(tr.vocabs.data or {}))
    prepared = translate.prepare_data(config, restored=tr.vocabs)
    held_out = prepared.reported
    self.model, self.params = tr.model, tr.params
    self.arch = dict(cell=spec.cell, units=spec.latent_dim,
                     embedding_dim=spec.embedding_dim,
                     bidirectional=spec.bidirectional,
                     attention=spec.attention,
                     attention_score=spec.attention_score,
                     input_feeding=spec.input_feeding)
    self.src_vocab, self.tgt_vocab = len(tr.vocabs.source), len(
        tr.vocabs.target)
    self.max_len = tr.vocabs.max_decode_len
    self.src_NS = held_out.decode_arrays["src"]
    self.mask_NS = held_out.decode_arrays["src_mask"]
    self.sentences = list(held_out.sources)
    self.description = {
        "model_dir": os.path.abspath(s.model_dir), "step": tr.step,
        "spec": dataclasses.asdict(spec),
        "data": {"path": translate.resolve_data_path(s.data_path),
                 **(tr.vocabs.data or {}),
                 "set": f"{held_out.name}: {len(held_out.sources)} "
                        "sentences"}}

  def _build_tiny(self, s: Settings):
    import jax
    from seqjax.models import Seq2Seq
    self.arch = dict(cell=s.cell, units=s.tiny_units,
                     embedding_dim=s.tiny_embedding_dim,
                     bidirectional=s.bidirectional, attention=s.attention,
                     attention_score=s.attention_score,
                     input_feeding=s.input_feeding)
    self.src_vocab, self.tgt_vocab = s.tiny_src_vocab, s.tiny_tgt_vocab
    self.max_len = s.tiny_max_len
    self.model = Seq2Seq(src_vocab=self.src_vocab, tgt_vocab=self.tgt_vocab,
                         **self.arch)
    rng = np.random.default_rng(s.seed)
    n, width = 24, 8
    lengths_N = rng.integers(1, width + 1, size=n)
    # Real ids only (no pad, start, end, unknown), padding too: only the
    # mask may hide it.
    self.src_NS = rng.integers(4, self.src_vocab, size=(n, width)).astype(
        np.int32)
    self.mask_NS = np.arange(width)[None] < lengths_N[:, None]
    params = jax.jit(self.model.init)(jax.random.key(s.seed),
                                      self.src_NS[:1], self.src_NS[:1, :2])
    params = jax.tree.map(np.asarray, params)
    readout = params["params"]["readout"]
    readout["kernel"] = readout["kernel"] * s.tiny_readout_scale
    readout["bias"] = readout["bias"].copy()
    readout["bias"][STOP] += s.tiny_stop_bias
    self.params = params
    self.sentences = [f"sentence {i}" for i in range(n)]
    self.description = {"tiny": True, "sentences": n, "source_width": width}

  def frameworks(self) -> list[str]:
    return ["seqjax", *PEERS]

  def runner(self, framework: str):
    if framework == "seqjax":
      return SeqjaxRunner(self)
    return importlib.import_module(PEERS[framework]).Runner(self)

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
            "mean_source_length": float(self.mask_NS.sum(1).mean())}


class SeqjaxRunner:
  """seqjax's two decoders, each jitted once per batch shape; every batch
  padded to ``batch`` rows (as ``decode_in_batches`` does), all dispatched
  before the first is fetched."""

  def __init__(self, workload: Workload):
    import jax
    from seqjax import decoding
    self.w = w = workload
    s = w.s
    ids = dict(max_len=w.max_len, start_id=START, stop_id=STOP, pad_id=PAD)
    greedy = decoding.make_decoder(w.model, full=True, **ids)
    beam = decoding.make_decoder(
        w.model, decoding.BeamSearch(s.beam_size, s.length_penalty),
        full=True, **ids)
    self.params = jax.device_put(w.params)
    self.fns = {"greedy": lambda p, x, m: greedy(p, x, m)[:2],
                f"beam{s.beam_size}": lambda p, x, m: _tokens_steps(
                    beam(p, x, m))}
    self.notes = ["seqjax: every batch padded to the widest source of all "
                  f"({w.src_NS.shape[1]} tokens) and its last batch to the "
                  "batch size (one compiled shape per batch size); the "
                  "loop ends once no row of the batch can change"]

  def versions(self) -> dict:
    return harness.seqjax_versions()

  def decode(self, decoder: str, batch: int) -> tuple[np.ndarray, int, int]:
    """-> tokens (N, max_len) of every sentence, decoder steps (summed over
    the batches), decoder rows stepped (rows x steps, summed)."""
    fn, w = self.fns[decoder], self.w
    k = 1 if decoder == "greedy" else w.s.beam_size
    outs = []
    for start, stop in w.batches(batch):
      src, mask = w.src_NS[start:stop], w.mask_NS[start:stop]
      short = batch - len(src)
      if short:
        src = np.concatenate([src, np.repeat(src[-1:], short, 0)])
        mask = np.concatenate([mask, np.repeat(mask[-1:], short, 0)])
      outs.append((fn(self.params, src, mask), stop - start))
    tokens, steps = [], 0
    for (tokens_BT, steps_), n in outs:
      tokens.append(np.asarray(tokens_BT)[:n])
      steps += int(steps_)
    return np.concatenate(tokens), steps, steps * batch * k

  def first_call(self, decoder: str, batch: int) -> dict:
    """The first call on one batch (trace, compile, run), its compile
    seconds (XLA's backend compiles within it) and compiles."""
    events = []

    def listen(event, duration_secs, **_):
      if event == harness.CompileCounter.EVENT:
        events.append(duration_secs)
    from jax import monitoring
    monitoring.register_event_duration_secs_listener(listen)
    try:
      src = np.resize(self.w.src_NS, (batch, self.w.src_NS.shape[1]))
      mask = np.resize(self.w.mask_NS, src.shape)
      secs, _ = harness.timed(lambda: np.asarray(self.fns[decoder](
          self.params, src, mask)[0]))
    finally:
      monitoring.unregister_event_duration_listener(listen)
    return {"first_call_s": secs, "compile_s": float(sum(events)),
            "compiles": len(events)}


def _tokens_steps(beams):
  return beams.tokens_BNT[:, 0], beams.steps


class Ops:
  """What a worker does for the parent (``harness`` serves it): warm-up,
  timed decoding, facts."""

  def __init__(self, workload: Workload, runner):
    self.w, self.r = workload, runner

  def info(self) -> dict:
    return {"versions": self.r.versions(),
            "notes": list(getattr(self.r, "notes", []) or [])}

  def warmup(self) -> dict:
    """Each decoder's first call for each batch size (not in the rates)."""
    out = {}
    for key in keys(self.w.s):
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


def measure(workload: Workload, frameworks: list[str], reps: int,
            single_thread: bool, log=print, settle_s: float = 1.0
            ) -> tuple[dict, dict, dict, list[str]]:
  """Every framework in its own worker; per repetition each decodes all
  sentences once per (decoder, batch size), the order of the frameworks
  rotating. -> (results per framework, agreement fractions, the seqjax
  worker's machine facts, notes)."""
  s, n = workload.s, len(workload.src_NS)
  workers, notes = harness.start_workers(__name__, dataclasses.asdict(s),
                                         frameworks, single_thread, log)
  frameworks = list(workers)
  try:
    results, tokens = harness.rotate_decodes(
        workers, reps, lambda fw: keys(s), n,
        ("seconds", "steps", "rows_stepped"), log, settle_s)
    for fw in frameworks:
      info = workers[fw].call("info")
      res = results[fw]
      res["versions"] = info["versions"]
      if info["notes"]:
        res["notes"] = info["notes"]
      res["mean_output_length"] = {
          key: float(np.mean(_lengths(t))) for key, t in tokens[fw].items()}
      res["longest_output_steps"] = {
          key: longest_output_steps(workload, key, t)
          for key, t in tokens[fw].items()}
    machine = workers["seqjax"].call("machine")
  finally:
    for worker in workers.values():
      worker.close()
  return results, agreements(workload, tokens), machine, notes


def measure_workload(workload: Workload, peers: list[str], reps: int,
                     single_thread: bool) -> tuple[dict, dict, list[str]]:
  """``benchmarks.run``'s entry point: measures, prints the tables ->
  (the run's entry for this workload, machine facts, notes)."""
  frameworks = ["seqjax"] + [p for p in peers if p in PEERS]
  print(f"Frameworks: {', '.join(frameworks)}; {reps} repetitions; "
        f"decoders {', '.join(keys(workload.s))}")
  results, agree, machine, notes = measure(workload, frameworks, reps,
                                           single_thread)
  entry = {"kind": NAME, "settings": dataclasses.asdict(workload.s),
           "single_thread": single_thread, "reps": reps,
           "model": workload.model_info(), "results": results,
           "agreement": agree}
  entry["ratios"] = ratio_rows(workload, results)
  print()
  for line in table_lines(entry) + [""] + ratio_lines(entry) + [
      ""] + agreement_lines(entry):
    print(line)
  return entry, machine, notes


def _lengths(tokens_NT: np.ndarray) -> np.ndarray:
  """Tokens up to and with the end symbol (all where there is none)."""
  ends_N = np.where((tokens_NT == STOP).any(1), (tokens_NT == STOP).argmax(1)
                    + 1, tokens_NT.shape[1])
  return ends_N


def longest_output_steps(workload: Workload, key: str,
                         tokens_NT: np.ndarray) -> int:
  """The steps a search would run if each batch stopped as soon as every
  sentence's returned output had ended: each batch's longest output,
  summed over the batches."""
  batch = int(key.split("@")[1])
  lengths_N = _lengths(tokens_NT)
  return int(sum(lengths_N[a:b].max() for a, b in workload.batches(batch)))


def agreements(workload: Workload, tokens: dict) -> dict:
  """Fractions of sentences with equal tokens: each seqjax decoder against
  PyTorch's at the same batch size; seqjax's across batch sizes; greedy
  against beam."""
  s, out = workload.s, {}
  sizes, beam = s.batch_sizes(), f"beam{s.beam_size}"
  ours = tokens.get("seqjax", {})
  for key in keys(s):
    for peer in (fw for fw in tokens if fw != "seqjax"):
      if key in tokens[peer] and key in ours:
        out[f"seqjax vs {peer} {key}"] = agreement(ours[key],
                                                   tokens[peer][key])
  for d in decoder_names(s):
    for b in sizes[1:]:
      out[f"seqjax {d}@{sizes[0]} vs {d}@{b}"] = agreement(
          ours[f"{d}@{sizes[0]}"], ours[f"{d}@{b}"])
  out[f"seqjax greedy vs {beam} @{sizes[0]}"] = agreement(
      ours[f"greedy@{sizes[0]}"], ours[f"{beam}@{sizes[0]}"])
  return out


def ratio_rows(workload: Workload, results: dict) -> list[dict]:
  """Per batch size: seqjax beam over PyTorch beam (sentences/s, at least
  5x), seqjax beam's time over seqjax greedy's (at most 4x), and seqjax
  greedy over PyTorch greedy (no target). Each repetition's own ratio;
  their median and range."""
  s = workload.s
  beam = f"beam{s.beam_size}"
  rate = lambda fw, key: results[fw]["reps"][key]["sentences_per_s"]
  rows = []
  for b in s.batch_sizes():
    g, k = f"greedy@{b}", f"{beam}@{b}"
    specs = [("seqjax beam / torch beam (sentences/s)", "seqjax", k,
              "torch", k, TARGETS["beam_vs_torch"], "at_least"),
             ("seqjax beam time / seqjax greedy time", "seqjax", g,
              "seqjax", k, TARGETS["beam_over_greedy"], "at_most"),
             ("seqjax greedy / torch greedy (sentences/s)", "seqjax", g,
              "torch", g, None, None)]
    for label, fw_a, key_a, fw_b, key_b, target, kind in specs:
      row = {"metric": label, "batch": b, "target": target, "kind": kind}
      if fw_a not in results or fw_b not in results:
        rows.append({**row, "ratio": None, "met": None})
        continue
      per_rep = [x / y for x, y in zip(rate(fw_a, key_a), rate(fw_b, key_b))]
      ratio = harness.median(per_rep)
      met = None if target is None else bool(
          ratio >= target if kind == "at_least" else ratio <= target)
      rows.append({**row, "ratio": ratio, "range": [min(per_rep),
                                                    max(per_rep)],
                   "rep_ratios": per_rep, "met": met})
  return rows


# ----------------------------------------------------------------- output


def _fmt_target(row: dict) -> str:
  if row["target"] is None:
    return "no target"
  sign = ">=" if row["kind"] == "at_least" else "<="
  return (f"target {sign} {row['target']:g}x: "
          f"{'met' if row['met'] else 'MISSED'}")


def table_lines(entry: dict) -> list[str]:
  """The rates, steps and compile times as Markdown table rows (also what
  the run prints)."""
  res, s = entry["results"], entry["settings"]
  fws = list(res)
  beam = f"beam{s['beam_size']}"
  cols = [(fw, d) for fw in fws for d in ("greedy", beam)]
  head = "| batch | " + " | ".join(f"{fw} {d}" for fw, d in cols) + " |"
  lines = ["sentences/s (median of reps):", "", head,
           "| --- | " + " | ".join("---:" for _ in cols) + " |"]
  sizes = [int(b) for b in s["batches"].split("/") if b.strip()]
  for b in sizes:
    lines.append(f"| {b} | " + " | ".join(
        f"{res[fw]['median'][f'{d}@{b}']['sentences_per_s']:,.1f}"
        for fw, d in cols) + " |")
  lines += ["", "Decoder steps run (summed over the batches) / rows "
            "stepped (batch rows x steps, summed; PyTorch drops finished "
            "sentences):", "", head,
            "| --- | " + " | ".join("---:" for _ in cols) + " |"]
  for b in sizes:
    lines.append(f"| {b} | " + " | ".join(
        f"{res[fw]['median'][f'{d}@{b}']['steps']:,.0f} / "
        f"{res[fw]['median'][f'{d}@{b}']['rows_stepped']:,.0f}"
        for fw, d in cols) + " |")
  lines += ["", "Steps if each batch had stopped once all its returned "
            "outputs had ended (each batch's longest output, summed) / "
            "mean output length in tokens:", "", head,
            "| --- | " + " | ".join("---:" for _ in cols) + " |"]
  for b in sizes:
    lines.append(f"| {b} | " + " | ".join(
        f"{res[fw]['longest_output_steps'][f'{d}@{b}']:,} / "
        f"{res[fw]['mean_output_length'][f'{d}@{b}']:.2f}"
        for fw, d in cols) + " |")
  lines += ["", "First call on one batch (seqjax: trace + compile + run; "
            "compile = XLA's backend compiles), seconds:", "", head,
            "| --- | " + " | ".join("---:" for _ in cols) + " |"]
  for b in sizes:
    cells = []
    for fw, d in cols:
      w = res[fw]["warmup"][f"{d}@{b}"]
      cells.append(f"{w['first_call_s']:.2f}" + (
          f" (compile {w['compile_s']:.2f})" if w.get("compiles") else ""))
    lines.append(f"| {b} | " + " | ".join(cells) + " |")
  return lines


def ratio_lines(entry: dict) -> list[str]:
  out = []
  for row in entry["ratios"]:
    if row["ratio"] is None:
      out.append(f"- {row['metric']}, batch {row['batch']}: not measured")
      continue
    lo, hi = row["range"]
    out.append(f"- {row['metric']}, batch {row['batch']}: "
               f"{row['ratio']:.2f}x (range {lo:.2f}-{hi:.2f}; per rep "
               + " / ".join(f"{r:.2f}" for r in row["rep_ratios"])
               + f"), {_fmt_target(row)}")
  return out


def agreement_lines(entry: dict) -> list[str]:
  return [f"- {k}: {v * 100:.1f}% of sentences, token for token"
          for k, v in entry["agreement"].items()]


def markdown_lines(name: str, entry: dict) -> list[str]:
  """RESULTS.md's section of a run's beam workload."""
  res, s = entry["results"], entry["settings"]
  m = entry["model"]
  threads = ("one thread per framework (--single_thread)"
             if entry.get("single_thread") else "each framework's default")
  fws = list(res)
  lines = ["", f"### {name} ({threads})", "",
           "- versions: " + "; ".join(
               f"{fw}: " + ", ".join(f"{k} {v}" for k, v in
                                     res[fw]["versions"].items())
               for fw in fws),
           f"- model: {m['parameters']:,} parameters, {m['src_vocab']:,} "
           f"source / {m['tgt_vocab']:,} target symbols, "
           f"{m['sentences']:,} sentences (mean source length "
           f"{m['mean_source_length']:.2f}, padded width "
           f"{m['source_width']}), max_decode_len {m['max_decode_len']}",
           f"- beam_size {s['beam_size']}, length_penalty "
           f"{s['length_penalty']:g}, {entry['reps']} repetitions, "
           f"{s['passes']} timed pass(es) each"]
  lines += [f"- {note}" for fw in fws for note in res[fw].get("notes", [])]
  lines += [""]
  lines += table_lines(entry)
  lines += ["", "Ratios (each repetition's own; their median, range and "
            "values):", ""] + ratio_lines(entry)
  lines += ["", "Agreement:", ""] + agreement_lines(entry)
  return lines
