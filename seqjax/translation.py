"""The translation model: its settings, loss, decoder, and inference.

``load_translator(workdir)`` rebuilds a trained model from the settings its
checkpoint records and the vocabularies of ``vocab.json``, restores only its
parameters, and translates sentences:

  translator = load_translator("runs/cmn")
  for t in translator.translate(["I'm hungry."]):
    print(t.decoded, t.unknown, t.truncated)

A symbol not in the training vocabulary is encoded as the unknown symbol and
named (``Translation.unknown``); a sentence longer than the longest training
source is cut to it (``Translation.dropped``), since the encoder never saw
longer inputs (a vocab.json without that record translates it whole).
``load_ensemble(workdirs)`` translates with several models as one, their
log-probabilities averaged every step (``seqjax.decoding.ensemble``).
Both read workdirs in ``seqjax.translation_load`` and are named here too.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import jax
import numpy as np

from seqjax import decoding
from seqjax import evaluate
from seqjax import train as train_lib
from seqjax.data import vocab_file
from seqjax.data import vocab as vocab_lib
from seqjax.data.vocab import Vocab
from seqjax.errors import ParameterError
from seqjax.models import Seq2Seq
from seqjax.settings import RECORD_KEY, ModelSettings

TASK = "translate"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """The settings that make a translation model (the Keras example's by
  default): its architecture, the source's symbols, and how it is trained.
  ``feedback`` applies without teacher forcing only; ``label_smoothing``
  shapes training, not the parameters."""

  settings: ModelSettings = ModelSettings()
  level: str = "char"
  teacher_forcing: bool = True
  feedback: str = "softmax"
  label_smoothing: float = 0.0

  @classmethod
  def from_model_config(cls, saved: dict) -> "ModelSpec":
    """The spec of a checkpoint's record (``model_config``; older records
    are upgraded when read, ``seqjax.settings.upgrade_record``)."""
    return cls(settings=ModelSettings.from_record(saved[RECORD_KEY]),
               level=saved["level"], teacher_forcing=saved["teacher_forcing"],
               feedback=saved["feedback"] or cls.feedback)


def model_config(spec: ModelSpec, src_vocab: Vocab, tgt_vocab: Vocab,
                 optimizer: str) -> dict:
  """What a checkpoint must match (and what ``load_translator`` rebuilds
  from)."""
  return {"task": TASK, "level": spec.level,
          "src_vocab": len(src_vocab), "tgt_vocab": len(tgt_vocab),
          "vocab": src_vocab.fingerprint() + tgt_vocab.fingerprint(),
          "teacher_forcing": spec.teacher_forcing,
          "feedback": None if spec.teacher_forcing else spec.feedback,
          "optimizer": optimizer, RECORD_KEY: spec.settings.record()}


def build_model(spec: ModelSpec, src_vocab: Vocab, tgt_vocab: Vocab,
                ) -> Seq2Seq:
  return Seq2Seq(src_vocab=len(src_vocab), tgt_vocab=len(tgt_vocab),
                 settings=spec.settings)


def make_loss(spec: ModelSpec, model: Seq2Seq, seed: int = 0):
  """The training loss; dropout masks come from ``seed`` and the step."""
  dropout_seed = seed if spec.settings.dropout else None
  if spec.teacher_forcing:
    return train_lib.make_seq2seq_loss(model, spec.label_smoothing,
                                       dropout_seed)
  return train_lib.make_free_running_loss(model, vocab_lib.START_ID,
                                          spec.feedback, spec.label_smoothing,
                                          dropout_seed)


def decodes_tokens(spec: ModelSpec) -> bool:
  """Whether the model is decoded fed its own tokens (what beam search
  does): not one trained on its softmax fed back."""
  return spec.teacher_forcing or spec.feedback == "argmax"


def make_decoder(spec: ModelSpec, model: Seq2Seq, max_len: int,
                 return_attention: bool = False,
                 strategy=decoding.Greedy(), full: bool = False,
                 score: bool = False, in_flight: Optional[bool] = None):
  """Decoding as the model was trained: a model trained without teacher
  forcing on softmax feedback is fed its softmax back (not by beam search);
  others their tokens. ``return_attention`` (an attention model decoded
  with tokens fed back) implies ``full``: ``decoding.Decoded`` with the
  weights (B, T, S); ``score``: with each sequence's log-probability.
  ``in_flight`` (default: wherever it can, fed tokens without the
  weights: greedy, and beam search returning its best tokens): a
  ``decoding.QueueDecoder``, the same tokens, faster on many sentences
  (benchmarks/RESULTS.md, in-flight batching)."""
  feedback = ("tokens" if decodes_tokens(spec) or return_attention
              else "softmax")
  if in_flight is None:
    queued = isinstance(strategy, decoding.Greedy) or (
        decoding.is_beam(strategy) and not full)
    in_flight = queued and feedback == "tokens" and not return_attention
  if decoding.is_beam(strategy) and (feedback != "tokens" or
                                     return_attention):
    raise ParameterError("beam_size", strategy.beam_size, "beam search "
                         "feeds the decoder its tokens: not a model "
                         "trained on its softmax fed back, and without "
                         "attention weights")
  return decoding.make_decoder(
      model, strategy, max_len=max_len, start_id=vocab_lib.START_ID,
      stop_id=vocab_lib.END_ID, pad_id=vocab_lib.PAD_ID, feedback=feedback,
      return_attention=return_attention, full=full or return_attention,
      score=score, in_flight=in_flight)


def attention_examples(spec: ModelSpec, model: Seq2Seq, params,
                       src_vocab: Vocab, tgt_vocab: Vocab, sentences: list,
                       max_len: int) -> list:
  """Greedy translations of ``sentences`` with the attention weights of
  every output symbol (``seqjax.attention_plot.AttentionExample``)."""
  from seqjax import attention_plot
  decoder = make_decoder(spec, model, max_len, return_attention=True)
  src = vocab_lib.encode_sources(src_vocab, sentences)
  decoded = jax.device_get(decoder(params, src["src"], src["src_mask"]))
  tokens_NT, weights_NTS = decoded.tokens_BT, decoded.weights_BTS
  outputs = []
  for row in tokens_NT:
    ids = list(row)
    end = ids.index(vocab_lib.END_ID) + 1 if vocab_lib.END_ID in ids else len(
        ids)
    outputs.append([tgt_vocab.symbols[i] for i in ids[:end]])
  sources = [src_vocab.tokenize(s) for s in sentences]
  return attention_plot.examples_from(sources, outputs, weights_NTS)


# --------------------------------------------------------------- inference

class ModelNotFoundError(ParameterError):
  """A workdir without a trained translation model."""


@dataclasses.dataclass
class Translation:
  input: str
  decoded: str
  unknown: list[str]   # symbols not in the training vocabulary, in order
  dropped: str         # the text cut off past the longest training source
  truncated: int       # how many tokens were cut off
  # With n_best: (translation, score) of the N best, ``decoded`` first.
  n_best: Optional[list[tuple[str, float]]] = None


@dataclasses.dataclass
class Translator:
  """A trained translation model with its vocabularies, decoding by
  ``strategy`` (``seqjax.decoding``; sampling draws with ``key``)."""

  spec: ModelSpec
  model: Seq2Seq  # or a decoding.Ensemble of them (load_ensemble)
  params: dict
  vocabs: vocab_file.VocabFile
  step: int  # the checkpoint's
  strategy: object = decoding.Greedy()
  n_best: int = 0  # > 0: the N best beams, or N samples a sentence
  key: Optional[jax.Array] = None
  # An in-flight decoder's slots: more sentences queue for them.
  slots: int = 64

  def __post_init__(self):
    sampling = isinstance(self.strategy, decoding.Sampling)
    if sampling and self.key is None:
      self.key = jax.random.key(0)
    if decoding.is_beam(self.strategy):
      decoding.check_beam(self.strategy.beam_size, self.n_best or 1,
                          vocab=len(self.vocabs.target))
      if not decodes_tokens(self.spec):
        raise ParameterError("beam_size", self.strategy.beam_size,
                             "beam search feeds the decoder its tokens; this "
                             "model was trained on its softmax fed back")
    elif self.n_best and not sampling:  # greedy: one beam
      decoding.check_beam(1, self.n_best)

  @functools.cached_property
  def decoder(self):
    """The jitted decoder, made once: one compile per input shape; with
    ``n_best``, its whole result (``Beams``, or scored ``Decoded``)."""
    strategy, n_best = self.strategy, self.n_best
    if n_best and isinstance(strategy, decoding.Greedy):  # one beam
      strategy = decoding.BeamSearch(1)
    if n_best and decoding.is_beam(strategy):
      strategy = dataclasses.replace(strategy, n_best=n_best)
    return make_decoder(self.spec, self.model, self.vocabs.max_decode_len,
                        strategy=strategy, full=bool(n_best),
                        score=bool(n_best) and not decoding.is_beam(strategy))

  def translate(self, sentences: list[str], width: Optional[int] = None
                ) -> list[Translation]:
    """Translations of ``sentences``, decoded in one batch (greedy: one
    queue, by at most ``slots`` rows) padded to ``width`` tokens (default: the longest sentence; either way at most the
    longest training source, and longer sentences are truncated). A fixed
    ``width`` gives one compiled shape for any sentences."""
    for i, s in enumerate(sentences, start=1):
      if not s.strip():
        raise ParameterError("sentences", repr(s), f"sentence {i} is empty "
                             "or only spaces: nothing to translate")
    src_vocab = self.vocabs.source
    tokens = [src_vocab.tokenize(s) for s in sentences]
    width = width or max(len(t) for t in tokens)
    if self.vocabs.max_source_len is not None:
      width = min(width, self.vocabs.max_source_len)
    src = vocab_lib.encode_sources(src_vocab, sentences, width)
    alternatives = [None] * len(sentences)
    if self.n_best:
      alternatives = self._n_best(src)
      decoded = [a[0][0] for a in alternatives]
    else:
      batch = len(sentences)
      if getattr(self.decoder, "in_flight", False):
        batch = min(batch, self.slots)
      decoded = evaluate.decode_texts(self.decoder, self.params,
                                      self.vocabs.target, src, batch,
                                      key=self.key)
    return [Translation(input=s, decoded=text,
                        unknown=src_vocab.encode(s)[1],
                        dropped=src_vocab.detokenize(sym[width:]),
                        truncated=len(sym[width:]), n_best=alts)
            for s, sym, text, alts in zip(sentences, tokens, decoded,
                                          alternatives)]

  @functools.cached_property
  def token_log_probs(self):
    """The jitted teacher-forced scorer: one compile per padded shape."""
    if not decodes_tokens(self.spec):
      raise ParameterError("score", "", "this model was trained on its "
                           "softmax fed back: it gives no probability to a "
                           "token sequence")
    return train_lib.make_token_log_probs(self.model)

  def score(self, pairs: list[tuple[str, str]], batch_size: int = 256
            ) -> list[Scored]:
    """Each (source, reference)'s log-probability and its tokens', the end
    symbol's included, teacher forced in batches of ``batch_size`` (the last
    padded): sources padded to the longest training source (and cut to it,
    as ``translate``), references to the decoding bound or the longest."""
    scorer = self.token_log_probs
    sources, references = [p[0] for p in pairs], [p[1] for p in pairs]
    arrays, widths = self._score_arrays(sources, references)
    logp_NT = _in_batches(scorer, self.params, arrays, batch_size)
    out = []
    for i, (source, reference) in enumerate(pairs):
      ids, unknown = self.vocabs.target.encode(reference)
      n = len(ids) + 1
      logps = [float(x) for x in logp_NT[i, :n]]
      symbols = [self.vocabs.target.symbols[j] for j in ids]
      out.append(Scored(source, reference, float(sum(logps)),
                        symbols + [vocab_lib.END], logps, unknown,
                        max(0, widths[i] - arrays["src"].shape[1])))
    return out

  def _score_arrays(self, sources, references) -> tuple[dict, list[int]]:
    """-> (the teacher-forcing arrays, each source's length in tokens)."""
    src_vocab = self.vocabs.source
    lengths = [len(vocab_lib.tokenize(s, src_vocab.level)) for s in sources]
    width_S = self.vocabs.max_source_len or max(lengths)
    longest = max(len(self.vocabs.target.encode(r)[0]) for r in references)
    width_T = max(self.vocabs.max_decode_len, longest + 1)
    src = vocab_lib.encode_sources(src_vocab, sources, width_S)
    tgt = vocab_lib.encode_targets(self.vocabs.target, references, width_T)
    return {"src": src["src"], "src_mask": src["src_mask"],
            **{k: tgt[k] for k in ("dec_in", "target", "target_mask")}
            }, lengths

  def _n_best(self, src: dict) -> list[list[tuple[str, float]]]:
    """(text, score) of each sentence's N best beams (their scores), or of
    its N samples, most likely first (their log-probabilities)."""
    if not isinstance(self.strategy, decoding.Sampling):
      beams = jax.device_get(self.decoder(self.params, src["src"],
                                          src["src_mask"]))
      tokens_BNT, scores_BN = beams.tokens_BNT, beams.scores_BN
    else:
      repeat = lambda x: jax.numpy.repeat(x, self.n_best, axis=0)
      drawn = jax.device_get(self.decoder(
          self.params, repeat(src["src"]), repeat(src["src_mask"]), self.key))
      tokens_BNT = drawn.tokens_BT.reshape(-1, self.n_best,
                                           drawn.tokens_BT.shape[-1])
      scores_BN = drawn.log_probs_B.reshape(-1, self.n_best)
    decode = self.vocabs.target.decode
    return [sorted(((decode(t), float(sc)) for t, sc in
                    zip(tokens_BNT[b], scores_BN[b])), key=lambda a: -a[1])
            for b in range(len(scores_BN))]


@dataclasses.dataclass
class Scored:
  """A (source, reference) pair's log-probability under the model."""

  source: str
  reference: str
  log_prob: float               # the sum of token_log_probs
  tokens: list[str]             # the reference's symbols, then the end
  token_log_probs: list[float]  # of each of ``tokens``, in order
  unknown: list[str]            # reference symbols not in the vocabulary
  truncated: int                # source tokens cut off (as ``translate``)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def read_scored_pairs(path: str) -> list[tuple[str, str]]:
  """(source, reference) of each line of ``path``, tab-separated (more
  columns are ignored). Raises ParameterError naming the file and line of
  the first line without both, before anything is scored."""
  try:
    with open(path, encoding="utf-8") as f:
      lines = f.read().splitlines()
  except (OSError, ValueError) as e:  # ValueError: undecodable, NUL in path
    raise ParameterError("score", path, f"cannot be read: {e}") from e
  pairs = []
  for n, line in enumerate(lines, start=1):
    columns = line.split("\t")
    if len(columns) < 2 or not columns[0].strip() or not columns[1].strip():
      raise ParameterError("score", path, f"line {n}: expected "
                           "source<TAB>reference, a column is missing or "
                           f"empty in {line!r}")
    pairs.append((columns[0], columns[1]))
  return pairs


def _in_batches(fn, params, arrays: dict, batch_size: int):
  """``fn(params, batch)`` over ``arrays``' rows in batches of
  ``batch_size``, the last padded by repeating its last row (one program
  shape); -> the host rows, stacked."""
  n = len(next(iter(arrays.values())))
  outputs = []
  for start in range(0, n, batch_size):
    batch = {k: v[start:start + batch_size] for k, v in arrays.items()}
    rows = len(batch["src"])
    if rows < batch_size:
      batch = {k: np.concatenate([v, np.repeat(v[-1:], batch_size - rows, 0)])
               for k, v in batch.items()}
    outputs.append((fn(params, batch), rows))
  return np.concatenate([np.asarray(out)[:rows] for out, rows in outputs])


# Reading trained models from their workdirs lives in
# seqjax.translation_load; its names stay reachable here.
_LOADERS = frozenset({"saved_model_config", "load_records", "load_translator", "restore_model", "load_member_records", "load_ensemble", "param_shapes"})


def __getattr__(name: str):
  if name in _LOADERS:
    from seqjax import translation_load
    return getattr(translation_load, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
