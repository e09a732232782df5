"""The beam_toolkit workload: seqjax beam search against OpenNMT-py's (issue 15).

  taskset -c 1 env XLA_FLAGS=--xla_cpu_multi_thread_eigen=false \\
      OMP_NUM_THREADS=1 python -m benchmarks.run --workload=beam_toolkit \\
      --peers=onmt --single_thread --json=PATH

Greedy and beam-5 decoding of the translate attention model's sizes
(configs/translate_attention_word.flags: word level, embeddings 128, a
bidirectional LSTM encoder of 256 a direction, a 256-unit LSTM decoder with
input feeding and Luong 'general' attention; source and target vocabularies
of the random split's training pairs), randomly initialised, in two
frameworks, each in its own worker process, the frameworks taking turns:

* seqjax: ``seqjax.models.Seq2Seq``, greedy and beam search decoders of
  ``seqjax.decoding.make_decoder``;
* OpenNMT-py (the toolkit compared against; a benchmark-only package, not a
  dependency of seqjax): its own RNN model (``onmt.model_builder
  .build_base_model``: ``-encoder_type brnn -decoder_type rnn -rnn_type LSTM
  -global_attention general -input_feed 1``) decoded by its own
  ``Translator.translate_batch`` (``BeamSearch`` with the GNMT penalty
  ``-length_penalty wu -alpha``; greedy: ``GreedySearch``, ``-beam_size 1
  -random_sampling_topk 1``, its argmax), as its translate command does for
  each batch.

OpenNMT-py's RNN decoder starts from the encoder's final states, both
directions concatenated, so its decoder is as wide as the whole encoder:
``-hidden_size 512`` is 256 a direction with a 512-unit decoder (framework
``onmt_h512``), ``-hidden_size 256`` a 256-unit decoder with 128 a
direction (``onmt_h256``). seqjax's learned bridge maps 2 x 256 to a 256
decoder; no OpenNMT-py model has both its sizes, so both are run.

Equal work: random weights decide output lengths, so every decoder runs a
fixed ``steps`` decoder steps for every sentence: seqjax without a stop
token (``stop_id=None``), OpenNMT-py with ``-min_length = -max_length =
steps`` (its end token blocked until the last step; ``-max_length_ratio 0``
so the source length does not cap it). The decoder steps each framework ran
are counted and recorded. ``natural``: OpenNMT-py also decodes with its end
token allowed (``-min_length 0``), at the first batch size, to show its own
stopping (not compared).

The sentences are the test set of the translate task's random split
(``experiments.translate.prepare_data``: 1,000 sentences), in order, in
consecutive batches: seqjax pads every batch to the widest source and its
last batch to the batch size (one compiled shape); OpenNMT-py gets each
batch cut to its widest source. ``tiny``: small sizes and random sentences,
for tests.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
import sys
import time
import types

import numpy as np

from seqjax.data import vocab as vocab_lib
from seqjax.errors import ParameterError

from benchmarks import harness

NAME = "beam_toolkit"
PEERS = ("onmt",)
START, STOP, PAD = vocab_lib.START_ID, vocab_lib.END_ID, vocab_lib.PAD_ID
TARGETS = {"beam_vs_toolkit": 5.0,   # seqjax beam / OpenNMT-py beam, at least
           "beam_over_greedy": 4.0}  # seqjax beam time / greedy time, at most
# Imported by onmt.transforms (data-preparation transforms every import of
# onmt loads) and never called when decoding token ids: absent ones are
# stood in for, so that only OpenNMT-py's pure-Python needs are installed.
TRANSFORM_ONLY_MODULES = ("spacy", "fasttext", "ahocorasick", "rapidfuzz")
DEFINITIONS = [
    "sentences/s: the sentences over the seconds of one pass over all of "
    "them in batches (the best of `passes` passes), after a warm-up call "
    "per decoder and batch size; the median over repetitions",
    "equal work: every decoder runs `steps` decoder steps for every "
    "sentence (seqjax without a stop token; OpenNMT-py with min_length = "
    "max_length = steps); steps: decoder steps run, summed over batches",
    "first call: one batch decoded by a fresh decoder (seqjax: tracing, "
    "compiles, of which compile counts XLA's backend compiles, and the run)",
    "ratio: each repetition's own, their median and range; seqjax beam time "
    "/ greedy time is greedy's sentences/s over beam's"]


@dataclasses.dataclass
class Settings:
  data_path: str = ""       # empty: $SEQJAX_CMN_PATH, else ../shared/...
  steps: int = 20           # decoder steps of every sentence (equal work)
  beam_size: int = 5
  length_penalty: float = 0.6  # GNMT's alpha (OpenNMT-py: -alpha, wu)
  batches: str = "50/256"   # batch sizes, "/"-separated
  num_sentences: int = 0    # 0: all
  passes: int = 1           # timed passes per repetition (the best kept)
  natural: bool = True      # OpenNMT-py also with its end token allowed
  onmt_hidden: str = "512/256"  # OpenNMT-py -hidden_size values, "/"-sep.
  units: int = 256          # seqjax: per direction and decoder
  embedding_dim: int = 128
  tiny: bool = False        # tests: the sizes below, random sentences
  tiny_units: int = 8
  tiny_embedding_dim: int = 8
  tiny_src_vocab: int = 30
  tiny_tgt_vocab: int = 24
  tiny_sentences: int = 12
  seed: int = 0

  def batch_sizes(self) -> list[int]:
    return _sizes("batches", self.batches)

  def onmt_sizes(self) -> list[int]:
    return _sizes("onmt_hidden", self.onmt_hidden)


def _sizes(name: str, text: str) -> list[int]:
  try:
    sizes = [int(b) for b in text.split("/") if b.strip()]
  except ValueError as e:
    raise ParameterError(name, text, "must be sizes separated by '/'") from e
  if not sizes or min(sizes) < 1:
    raise ParameterError(name, text, "must be positive sizes separated by "
                         "'/'")
  return sizes


def beam_name(s: Settings) -> str:
  return f"beam{s.beam_size}"


def keys(s: Settings, framework: str) -> list[str]:
  """Its measurements: ``greedy@50``, ``beam5@50``, ...; OpenNMT-py with
  ``natural`` also ``greedy_natural@50``, ``beam5_natural@50``."""
  out = [f"{d}@{b}" for b in s.batch_sizes()
         for d in ("greedy", beam_name(s))]
  if framework != "seqjax" and s.natural:
    b = s.batch_sizes()[0]
    out += [f"greedy_natural@{b}", f"{beam_name(s)}_natural@{b}"]
  return out


def framework_names(s: Settings, peers) -> list[str]:
  return ["seqjax"] + [f"onmt_h{h}" for h in s.onmt_sizes()
                       if "onmt" in peers]


class Workload:
  """Sizes and sentences (source ids, seqjax's numbering), built the same
  in every worker."""

  name = NAME

  def __init__(self, settings: Settings):
    self.s = s = settings
    s.batch_sizes()
    s.onmt_sizes()  # refuse bad sizes before any work
    if s.steps < 1:
      raise ParameterError("steps", s.steps, "must be at least 1")
    if s.passes < 1:
      raise ParameterError("passes", s.passes, "must be at least 1")
    if s.tiny:
      self._tiny(s)
    else:
      self._test_set(s)
    from seqjax import decoding
    decoding.check_beam(s.beam_size, 1, s.length_penalty, self.tgt_vocab)
    n = s.num_sentences or len(self.src_NS)
    self.src_NS, self.mask_NS = self.src_NS[:n], self.mask_NS[:n]

  def _test_set(self, s: Settings):
    from experiments import translate
    config = translate.TranslateConfig(
        data_path=s.data_path, level="word", split="random", split_seed=0,
        latent_dim=s.units, embedding_dim=s.embedding_dim)
    prepared = translate.prepare_data(config)
    held_out = prepared.reported
    self.units, self.embedding_dim = s.units, s.embedding_dim
    self.src_vocab = len(prepared.src_vocab)
    self.tgt_vocab = len(prepared.tgt_vocab)
    self.src_NS = np.asarray(held_out.decode_arrays["src"], np.int32)
    self.mask_NS = np.asarray(held_out.decode_arrays["src_mask"], bool)
    self.description = {
        "data": translate.resolve_data_path(s.data_path),
        "set": f"{held_out.name} of the random split (seed 0): "
               f"{len(held_out.sources)} sentences"}

  def _tiny(self, s: Settings):
    self.units, self.embedding_dim = s.tiny_units, s.tiny_embedding_dim
    self.src_vocab, self.tgt_vocab = s.tiny_src_vocab, s.tiny_tgt_vocab
    rng = np.random.default_rng(s.seed)
    n, width = s.tiny_sentences, 7
    lengths_N = rng.integers(1, width + 1, size=n)
    self.mask_NS = np.arange(width)[None] < lengths_N[:, None]
    # Real symbols (not pad or unknown), pad where the mask ends.
    self.src_NS = np.where(self.mask_NS, rng.integers(
        2, self.src_vocab, size=(n, width)), PAD).astype(np.int32)
    self.description = {"tiny": True, "sentences": n}

  def batches(self, batch: int):
    n = len(self.src_NS)
    return [(i, min(i + batch, n)) for i in range(0, n, batch)]

  def runner(self, framework: str):
    if framework == "seqjax":
      return SeqjaxRunner(self)
    hidden = int(framework.rsplit("_h", 1)[1])
    return OnmtRunner(self, hidden)

  def info(self) -> dict:
    return {**self.description, "src_vocab": self.src_vocab,
            "tgt_vocab": self.tgt_vocab, "sentences": len(self.src_NS),
            "source_width": int(self.src_NS.shape[1]),
            "mean_source_length": float(self.mask_NS.sum(1).mean()),
            "max_source_length": int(self.mask_NS.sum(1).max())}


# ------------------------------------------------------------------ seqjax


class SeqjaxRunner:
  """seqjax's greedy and beam decoders, jitted once per batch shape; every
  batch padded to ``batch`` rows, all dispatched before the first is
  fetched."""

  def __init__(self, w: Workload):
    import jax
    from seqjax import decoding
    from seqjax.models import Seq2Seq
    self.w, s = w, w.s
    self.model = Seq2Seq(src_vocab=w.src_vocab, tgt_vocab=w.tgt_vocab,
                         units=w.units, cell="lstm",
                         embedding_dim=w.embedding_dim, bidirectional=True,
                         attention="luong", attention_score="general",
                         input_feeding=True)
    src = w.src_NS[:1]
    self.params = jax.jit(self.model.init)(jax.random.key(s.seed), src,
                                           src[:, :2])
    self.parameters = int(sum(np.prod(a.shape)
                              for a in jax.tree.leaves(self.params)))
    # No stop token: every sentence runs all `steps` steps (equal work).
    ids = dict(max_len=s.steps, start_id=START, stop_id=None, pad_id=PAD)
    greedy = decoding.make_decoder(self.model, full=True, **ids)
    beam = decoding.make_decoder(
        self.model, decoding.BeamSearch(s.beam_size, s.length_penalty),
        full=True, **ids)
    self.fns = {
        "greedy": lambda p, x, m: greedy(p, x, m)[:2],
        beam_name(s): lambda p, x, m: _tokens_steps(beam(p, x, m))}
    self.notes = [f"seqjax: every batch padded to the widest source of all "
                  f"({w.src_NS.shape[1]} tokens) and the last to the batch "
                  "size (one compiled shape per batch size)"]

  def versions(self) -> dict:
    return harness.seqjax_versions()

  def model_info(self) -> dict:
    return {"parameters": self.parameters, "class": "seqjax.models.Seq2Seq",
            "sizes": f"bidirectional LSTM encoder {self.w.units} a "
                     f"direction, bridge to a {self.w.units}-unit LSTM "
                     "decoder, input feeding, Luong general attention, "
                     f"embeddings {self.w.embedding_dim}"}

  def _padded(self, start: int, stop: int, batch: int):
    src, mask = self.w.src_NS[start:stop], self.w.mask_NS[start:stop]
    short = batch - len(src)
    if short:
      src = np.concatenate([src, np.repeat(src[-1:], short, 0)])
      mask = np.concatenate([mask, np.repeat(mask[-1:], short, 0)])
    return src, mask

  def decode(self, decoder: str, batch: int) -> tuple[np.ndarray, int]:
    """-> tokens (N, steps), decoder steps summed over the batches."""
    fn = self.fns[decoder]
    outs = [(fn(self.params, *self._padded(a, b, batch)), b - a)
            for a, b in self.w.batches(batch)]
    tokens, steps = [], 0
    for (tokens_BT, steps_), n in outs:
      tokens.append(np.asarray(tokens_BT)[:n])
      steps += int(steps_)
    return np.concatenate(tokens), steps

  def first_call(self, decoder: str, batch: int) -> dict:
    events = []

    def listen(event, duration_secs, **_):
      if event == harness.CompileCounter.EVENT:
        events.append(duration_secs)
    from jax import monitoring
    monitoring.register_event_duration_secs_listener(listen)
    try:
      a, b = self.w.batches(batch)[0]
      secs, _ = harness.timed(lambda: np.asarray(self.fns[decoder](
          self.params, *self._padded(a, b, batch))[0]))
    finally:
      monitoring.unregister_event_duration_listener(listen)
    return {"first_call_s": secs, "compile_s": float(sum(events)),
            "compiles": len(events)}


def _tokens_steps(beams):
  return beams.tokens_BNT[:, 0], beams.steps


# -------------------------------------------------------------- OpenNMT-py


def import_onmt():
  """Imports OpenNMT-py's decoding modules; the transform-only modules that
  are not installed are stood in for by modules whose every name raises
  ImportError when called."""
  def stand_in(name):
    module = types.ModuleType(name)

    def attr(a):
      if a.startswith("__"):
        raise AttributeError(a)

      def missing(*_, **__):
        raise ImportError(f"{name}.{a}: {name} is not installed (only "
                          "OpenNMT-py's data transforms use it)")
      return missing
    module.__getattr__ = attr
    return module
  stood_in = []
  for name in TRANSFORM_ONLY_MODULES:
    if name not in sys.modules and importlib.util.find_spec(name) is None:
      sys.modules[name] = stand_in(name)
      stood_in.append(name)
  import warnings
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # torch.cuda.amp deprecations
    import onmt
    import onmt.model_builder
    import onmt.translate
    from onmt.translate import translator
  return onmt, translator, stood_in


def onmt_vocab(size: int):
  """A pyonmttok vocabulary of ``size`` symbols, OpenNMT-py's specials
  first (unk 0, pad 1, bos 2, eos 3)."""
  import pyonmttok
  from onmt.constants import DefaultTokens as T
  specials = [T.UNK, T.PAD, T.BOS, T.EOS]
  return pyonmttok.build_vocab_from_tokens(
      specials + [f"w{i}" for i in range(size - len(specials))])


def onmt_source_ids(src_NS: np.ndarray) -> np.ndarray:
  """seqjax source ids (pad 0, unk 1) -> OpenNMT-py's (unk 0, pad 1)."""
  return np.where(src_NS == 0, 1, np.where(src_NS == 1, 0, src_NS))


class OnmtRunner:
  """OpenNMT-py's model of the workload's sizes (``-hidden_size hidden``)
  and its Translator for each decoder."""

  def __init__(self, w: Workload, hidden: int):
    import torch
    onmt, self.translator_lib, stood_in = import_onmt()  # first: stand-ins
    from onmt.bin.train import _get_parser as train_parser
    from onmt.utils.parse import ArgumentParser
    from onmt.constants import DefaultTokens
    self.w, s = w, w.s
    self.threads = harness.set_torch_threads()  # as many as seqjax's
    self.onmt = onmt
    torch.manual_seed(s.seed)
    self.vocabs = {"src": onmt_vocab(w.src_vocab),
                   "tgt": onmt_vocab(w.tgt_vocab),
                   "decoder_start_token": DefaultTokens.BOS}
    self.model_args = [
        "-model_type", "text", "-encoder_type", "brnn", "-decoder_type",
        "rnn", "-rnn_type", "LSTM", "-layers", "1", "-hidden_size",
        str(hidden), "-word_vec_size", str(w.embedding_dim),
        "-global_attention", "general", "-input_feed", "1", "-dropout", "0"]
    self.model_opt, unknown = train_parser().parse_known_args(
        self.model_args + ["-data", "{}", "-save_data", "unused",
                           "-src_vocab", "unused"])
    assert not unknown, unknown
    ArgumentParser.update_model_opts(self.model_opt)
    ArgumentParser.validate_model_opts(self.model_opt)
    self.model = onmt.model_builder.build_base_model(self.model_opt,
                                                     self.vocabs)
    # OpenNMT-py's default initialisation (-param_init 0.1); its generator
    # is built uninitialised.
    for p in self.model.parameters():
      torch.nn.init.uniform_(p, -0.1, 0.1)
    self.model.eval()
    self.parameters = int(sum(p.numel() for p in self.model.parameters()))
    self.hidden = hidden
    self.steps_run = 0
    self.translators = {}
    beam = beam_name(s)
    for name in ("greedy", beam, "greedy_natural", f"{beam}_natural"):
      self.translators[name] = self._translator(
          1 if name.startswith("greedy") else s.beam_size,
          natural=name.endswith("_natural"))
    self.notes = [
        f"OpenNMT-py {getattr(onmt, '__version__', '?')}: "
        f"Translator.translate_batch on torch {torch.__version__} "
        f"({self.threads} threads, {torch.get_num_interop_threads()} "
        "inter-op), each batch cut to its widest source; decoding options "
        + "; ".join(f"{k}: {' '.join(v)}" for k, v in self.options.items())]
    if stood_in:
      self.notes.append("OpenNMT-py: stood in for the transform-only "
                        f"modules {', '.join(stood_in)} (not installed)")

  def _translator(self, beam: int, natural: bool):
    from onmt.bin.translate import _get_parser as translate_parser
    from onmt.utils.parse import ArgumentParser
    s = self.w.s
    args = ["-n_best", "1", "-beam_size", str(beam), "-max_length",
            str(s.steps), "-min_length", "0" if natural else str(s.steps),
            "-max_length_ratio", "0"]
    if beam > 1:
      args += ["-length_penalty", "wu", "-alpha", str(s.length_penalty)]
    else:  # greedy: GreedySearch's argmax
      args += ["-random_sampling_topk", "1"]
    self.options = getattr(self, "options", {})
    self.options[f"beam {beam}{' natural' if natural else ''}"] = args
    opt = translate_parser().parse_args(
        ["-model", "unused", "-src", "unused", "-gpu", "-1"] + args)
    ArgumentParser.validate_translate_opts(opt)
    scorer = self.onmt.translate.GNMTGlobalScorer.from_opt(opt)
    tr = self.translator_lib.Translator.from_opt(
        self.model, self.vocabs, opt, self.model_opt, global_scorer=scorer,
        out_file=open(os.devnull, "w", encoding="utf-8"),
        report_score=False)
    # Counts decoder steps (one call a step; a negligible wrapper).
    step = tr._decode_and_generate  # pylint: disable=protected-access

    def counted(*args, **kwargs):
      self.steps_run += 1
      return step(*args, **kwargs)
    tr._decode_and_generate = counted  # pylint: disable=protected-access
    return tr

  def versions(self) -> dict:
    import torch
    return {"OpenNMT-py": getattr(self.onmt, "__version__", "?"),
            "torch": torch.__version__}

  def model_info(self) -> dict:
    return {"parameters": self.parameters,
            "class": "onmt.models.NMTModel (build_base_model)",
            "options": " ".join(self.model_args),
            "sizes": f"brnn LSTM encoder {self.hidden // 2} a direction, "
                     f"{self.hidden}-unit LSTM decoder (InputFeedRNNDecoder"
                     "), GlobalAttention general, embeddings "
                     f"{self.w.embedding_dim}"}

  def _batch(self, start: int, stop: int) -> dict:
    import torch
    mask = self.w.mask_NS[start:stop]
    lengths = mask.sum(1)
    src = onmt_source_ids(self.w.src_NS[start:stop, :int(lengths.max())])
    return {"src": torch.from_numpy(src.astype(np.int64))[:, :, None],
            "srclen": torch.from_numpy(lengths.astype(np.int64))}

  def decode(self, decoder: str, batch: int) -> tuple[np.ndarray, int]:
    """-> tokens (N, steps), pad after the end (OpenNMT-py's ids: eos 3,
    pad 1), decoder steps summed over the batches."""
    tr, out = self.translators[decoder.split("@")[0]], []
    self.steps_run = 0
    for a, b in self.w.batches(batch):
      result = tr.translate_batch(self._batch(a, b), attn_debug=False)
      for hyps in result["predictions"]:
        row = np.full(self.w.s.steps, 1, np.int32)
        ids = hyps[0].numpy()[:self.w.s.steps]
        row[:len(ids)] = ids
        out.append(row)
    return np.stack(out), self.steps_run

  def first_call(self, decoder: str, batch: int) -> dict:
    a, b = self.w.batches(batch)[0]
    tr = self.translators[decoder]
    secs, _ = harness.timed(lambda: tr.translate_batch(self._batch(a, b),
                                                       attn_debug=False))
    return {"first_call_s": secs, "compile_s": 0.0, "compiles": 0}


class Ops:
  """What a worker does for the parent (``harness`` serves it)."""

  def __init__(self, workload: Workload, runner):
    self.w, self.r = workload, runner
    self.framework = ("seqjax" if isinstance(runner, SeqjaxRunner)
                      else f"onmt_h{runner.hidden}")

  def info(self) -> dict:
    return {"versions": self.r.versions(), "model": self.r.model_info(),
            "notes": list(self.r.notes)}

  def warmup(self) -> dict:
    out = {}
    for key in keys(self.w.s, self.framework):
      decoder, batch = key.split("@")
      out[key] = self.r.first_call(decoder, int(batch))
    return out

  def decode(self, key: str) -> dict:
    decoder, batch = key.split("@")
    best = None
    for _ in range(self.w.s.passes):
      secs, (tokens, steps) = harness.timed(
          lambda: self.r.decode(decoder, int(batch)))
      best = secs if best is None else min(best, secs)
    return {"seconds": best, "tokens": tokens, "steps": steps}

  def machine(self) -> dict:
    return harness.machine_info()


# ------------------------------------------------------------ measurement


def output_lengths(framework: str, tokens_NT: np.ndarray) -> np.ndarray:
  """Tokens up to and with the end symbol (all where there is none)."""
  stop = STOP if framework == "seqjax" else 3  # OpenNMT-py's eos
  ends_NT = tokens_NT == stop
  return np.where(ends_NT.any(1), ends_NT.argmax(1) + 1, tokens_NT.shape[1])


def expected_steps(workload: Workload, key: str) -> int:
  """Steps of equal work: ``steps`` for every batch."""
  return workload.s.steps * len(workload.batches(int(key.split("@")[1])))


def measure(workload: Workload, frameworks: list[str], reps: int,
            single_thread: bool, log=print, settle_s: float = 1.0):
  """Every framework in its own worker; per repetition each runs all its
  measurements, the order of the frameworks rotating. -> (results per
  framework, the seqjax worker's machine facts, notes)."""
  s, n = workload.s, len(workload.src_NS)
  workers, notes = harness.start_workers(__name__, dataclasses.asdict(s),
                                         frameworks, single_thread, log)
  frameworks = list(workers)
  try:
    results, tokens = harness.rotate_decodes(
        workers, reps, lambda fw: keys(s, fw), n, ("seconds", "steps"), log,
        settle_s)
    for fw in frameworks:
      info = workers[fw].call("info")
      res = results[fw]
      res.update(versions=info["versions"], model=info["model"],
                 notes=info["notes"])
      res["mean_output_length"] = {
          key: float(np.mean(output_lengths(fw, t)))
          for key, t in tokens[fw].items()}
      res["equal_work"] = {
          key: bool(all(x == expected_steps(workload, key)
                        for x in res["reps"][key]["steps"]))
          for key in res["reps"] if "_natural" not in key}
    machine = workers["seqjax"].call("machine")
  finally:
    for worker in workers.values():
      worker.close()
  return results, machine, notes


def ratio_rows(workload: Workload, results: dict) -> list[dict]:
  """Per batch size and OpenNMT-py model: seqjax beam over OpenNMT-py beam
  (sentences/s, at least 5x) and seqjax greedy over OpenNMT-py greedy (no
  target); seqjax beam time over seqjax greedy time (at most 4x)."""
  s = workload.s
  beam = beam_name(s)
  rate = lambda fw, key: results[fw]["reps"][key]["sentences_per_s"]
  rows = []
  peers = [fw for fw in results if fw != "seqjax"]
  for b in s.batch_sizes():
    g, k = f"greedy@{b}", f"{beam}@{b}"
    specs = [("seqjax beam time / seqjax greedy time", "seqjax", g, "seqjax",
              k, TARGETS["beam_over_greedy"], "at_most")]
    for peer in peers:
      specs += [(f"seqjax beam / {peer} beam (sentences/s)", "seqjax", k,
                 peer, k, TARGETS["beam_vs_toolkit"], "at_least"),
                (f"seqjax greedy / {peer} greedy (sentences/s)", "seqjax", g,
                 peer, g, None, None)]
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


def measure_workload(workload: Workload, peers: list[str], reps: int,
                     single_thread: bool):
  """``benchmarks.run``'s entry point: measures, prints the tables ->
  (the run's entry for this workload, machine facts, notes)."""
  frameworks = framework_names(workload.s, peers)
  print(f"Frameworks: {', '.join(frameworks)}; {reps} repetitions")
  results, machine, notes = measure(workload, frameworks, reps,
                                    single_thread)
  entry = {"kind": NAME, "settings": dataclasses.asdict(workload.s),
           "single_thread": single_thread, "reps": reps,
           "data": workload.info(), "results": results}
  entry["ratios"] = ratio_rows(workload, results)
  print()
  for line in table_lines(entry) + [""] + ratio_lines(entry):
    print(line)
  return entry, machine, notes


# ----------------------------------------------------------------- output


def table_lines(entry: dict) -> list[str]:
  """Rates, steps, output lengths and first calls as Markdown rows."""
  res, s = entry["results"], entry["settings"]
  beam = f"beam{s['beam_size']}"
  lines = ["| decoder | batch | " + " | ".join(res) + " |",
           "| --- | ---: | " + " | ".join("---:" for _ in res) + " |"]
  all_keys = []
  for fw in res:
    all_keys += [k for k in res[fw]["median"] if k not in all_keys]

  def cell(fw, key, fmt):
    return fmt(fw, key) if key in res[fw]["median"] else "-"
  for label, fmt in [
      ("sentences/s", lambda fw, k: f"{res[fw]['median'][k]['sentences_per_s']:,.1f}"),
      ("steps", lambda fw, k: f"{res[fw]['median'][k]['steps']:,.0f}"),
      ("mean output length", lambda fw, k: f"{res[fw]['mean_output_length'][k]:.2f}"),
      ("first call s", lambda fw, k: (
          f"{res[fw]['warmup'][k]['first_call_s']:.2f}" + (
              f" (compile {res[fw]['warmup'][k]['compile_s']:.2f})"
              if res[fw]['warmup'][k]['compiles'] else "")))]:
    for key in all_keys:
      decoder, batch = key.split("@")
      lines.append(f"| {label}: {decoder} | {batch} | " + " | ".join(
          cell(fw, key, fmt) for fw in res) + " |")
  lines += ["", "| model | parameters | sizes |", "| --- | ---: | --- |"]
  lines += [f"| {fw} | {res[fw]['model']['parameters']:,} | "
            f"{res[fw]['model']['sizes']} |" for fw in res]
  del beam
  return lines


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


def markdown_lines(name: str, entry: dict) -> list[str]:
  """RESULTS.md's section of a run's beam_toolkit workload."""
  res, s, d = entry["results"], entry["settings"], entry["data"]
  threads = ("one thread per framework (--single_thread)"
             if entry.get("single_thread") else "each framework's default")
  lines = ["", f"### {name} ({threads})", "",
           "- versions: " + "; ".join(
               f"{fw}: " + ", ".join(f"{k} {v}" for k, v in
                                     res[fw]["versions"].items())
               for fw in res),
           f"- {d['sentences']:,} sentences (mean source length "
           f"{d['mean_source_length']:.2f}, longest "
           f"{d['max_source_length']}), {d['src_vocab']:,} source / "
           f"{d['tgt_vocab']:,} target symbols; every decoder "
           f"{s['steps']} steps a sentence (equal work: "
           + ", ".join(f"{fw} {'yes' if all(res[fw]['equal_work'].values()) else 'NO'}"
                       for fw in res) + ")",
           f"- beam_size {s['beam_size']}, length_penalty "
           f"{s['length_penalty']:g} (GNMT), n_best 1, {entry['reps']} "
           f"repetitions of {s['passes']} timed pass(es)", ""]
  lines += table_lines(entry)
  lines += ["", "Ratios (each repetition's own; their median, range and "
            "values):", ""] + ratio_lines(entry)
  return lines
