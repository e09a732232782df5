"""Character-level English -> Chinese translation on the Tatoeba pairs.

The Keras ``lstm_seq2seq`` example on ``cmn.txt``: the first ``num_samples``
pairs, the last ``validation_split`` of them held out (never trained on; all
reported translations and metrics are on them), an LSTM encoder-decoder with
256 units trained with teacher forcing and RMSprop, batch 64. Targets are
``"\\t" + sentence + "\\n"``; decoding is batched greedy search (one compiled
``lax.scan``) that stops at ``"\\n"``.

Differences from the Keras example: token ids instead of one-hot arrays (the
same model: a one-hot times a kernel is a row), padding masked out of the
encoder, the loss and the metrics, and length buckets: training sentences are
grouped by target length into ``--num_buckets`` buckets, each padded only to
its own longest sentence (the limits chosen to minimize the padded work), so
the step compiles once per bucket.

Variants: ``--cell=gru``; ``--level=word --embedding_dim=N`` (English words
through an Embedding; Chinese targets stay characters);
``--teacher_forcing=false``: the decoder is fed its own previous prediction
for every target step, never a target token. It is fed the predicted softmax
distribution (``--feedback=softmax``, as the Keras "no teacher forcing" model,
whose Dense softmax output is its next input): that is differentiable, so the
loss of later steps also trains earlier predictions, while the argmax
(``--feedback=argmax``) passes no gradient back through the loop. Such a
model decodes the way it was trained (softmax fed back, argmax emitted).

  python -m experiments.translate --epochs=30 --workdir=runs/cmn
  python -m experiments.translate --workdir=runs/cmn --translate="I'm hungry."

``prepare_data(config)`` (load, split, vocabularies, arrays) is the data
pipeline on its own, for other scripts.

``--translate`` inputs: a character (or word) not in the training vocabulary
is encoded as the unknown symbol and named in the output; an empty sentence
(or one of spaces only) is refused by ``validate()``, naming it; a sentence
longer than the longest training source (recorded in vocab.json) is
truncated to that length with a warning naming what was dropped, since the
encoder never saw longer inputs (older vocab.json files without the record
translate it whole).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Optional

import jax
import numpy as np
from absl import logging

from seqjax import decode as decode_lib
from seqjax import experiment
from seqjax import metrics
from seqjax import reliability
from seqjax import summary
from seqjax import train as train_lib
from seqjax.checkpoint import Checkpointer
from seqjax.data import pairs as pairs_lib
from seqjax.data import vocab as vocab_lib
from seqjax.data.vocab import Vocab
from seqjax.errors import SeqjaxError
from seqjax.experiment import field
from seqjax.models import FEEDBACKS, Seq2Seq

TASK = "translate"
ENV_VAR = "SEQJAX_CMN_PATH"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB_FILE = "vocab.json"
TRAIN_KEYS = ("src", "src_mask", "dec_in", "target", "target_mask")


@dataclasses.dataclass
class TranslateConfig(experiment.TrainingConfig):
  # The Keras example's training settings.
  epochs: int = field(100, "Passes over the training pairs (Keras: 100).")
  batch_size: int = field(64, "Training batch size (Keras: 64).")
  optimizer: str = field("rmsprop", "adam, rmsprop (Keras) or sgd.")

  data_path: str = field(
      "", f"The pair file (cmn.txt). Empty: ${ENV_VAR}, else "
      "../shared/data/cmn-eng/cmn.txt beside the repository.")
  num_samples: int = field(10_000, "Use the first N valid pairs (Keras: "
                           "10000); 0: all.")
  validation_split: float = field(0.2, "Fraction of the pairs, taken from the "
                                  "end as in Keras, held out for evaluation.")
  strict: bool = field(False, "Stop at a malformed line of the pair file "
                       "instead of skipping and counting it.")
  level: str = field("char", "char: characters in and out (Keras); word: "
                     "English words (needs --embedding_dim), Chinese "
                     "characters.")
  cell: str = field("lstm", "Recurrent cell: lstm or gru.")
  latent_dim: int = field(256, "Units of encoder and decoder (Keras: 256).")
  embedding_dim: Optional[int] = field(
      None, "Embedding width in front of encoder and decoder; unset: one-hot "
      "inputs (a kernel row lookup).")
  teacher_forcing: bool = field(True, "Feed the decoder the true previous "
                                "character in training; false: its own "
                                "prediction.")
  feedback: str = field("softmax", "Without teacher forcing, what is fed "
                        "back: softmax (the distribution, as Keras) or "
                        "argmax (the token).")
  num_buckets: int = field(4, "Length buckets of the training pairs (1: pad "
                           "all to the longest, as Keras).")
  max_decode_len: int = field(0, "Decoding steps at most; 0: the longest "
                              "target (with its end symbol) of the pairs.")
  eval_batch_size: int = field(256, "Batch size of held-out evaluation.")
  n_examples: int = field(10, "Held-out translations to print.")
  translate: Optional[list[str]] = field(
      None, "Translate these sentences with the model in --workdir (no "
      "training; the model settings come from its checkpoint). Repeatable.")

  def validate(self) -> list[str]:
    errors = super().validate()
    for name in ("latent_dim", "num_buckets", "eval_batch_size"):
      if getattr(self, name) < 1:
        errors.append(f"--{name} must be positive; got {getattr(self, name)}")
    for name in ("num_samples", "max_decode_len", "n_examples"):
      if getattr(self, name) < 0:
        errors.append(f"--{name} must be >= 0; got {getattr(self, name)}")
    if not 0.0 < self.validation_split < 1.0:
      errors.append(f"--validation_split must be in (0, 1); got "
                    f"{self.validation_split}")
    if self.level not in vocab_lib.LEVELS:
      errors.append(f"--level must be char or word; got {self.level!r}")
    if self.cell not in ("lstm", "gru"):
      errors.append(f"--cell must be lstm or gru; got {self.cell!r}")
    if self.embedding_dim is not None and self.embedding_dim < 1:
      errors.append(f"--embedding_dim must be positive; got "
                    f"{self.embedding_dim}")
    if self.level == "word" and self.embedding_dim is None:
      errors.append("--level=word needs --embedding_dim (words go through an "
                    "Embedding layer)")
    if self.feedback not in FEEDBACKS:
      errors.append(f"--feedback must be softmax or argmax; got "
                    f"{self.feedback!r}")
    if self.translate and not self.workdir:
      errors.append("--translate needs --workdir (a trained model's)")
    errors += reliability.range_errors(self, {
        "latent_dim": (None, reliability.MAX_UNITS),
        "embedding_dim": (None, reliability.MAX_UNITS),
        "num_samples": (None, reliability.MAX_EXAMPLES),
        "num_buckets": (None, reliability.MAX_LENGTH),
        "max_decode_len": (None, reliability.MAX_LENGTH),
        "eval_batch_size": (None, reliability.MAX_BATCH),
        "n_examples": (None, reliability.MAX_EXAMPLES)})
    u, e = self.latent_dim, self.embedding_dim or 0
    if 1 <= u <= reliability.MAX_UNITS and 0 <= e <= reliability.MAX_UNITS:
      n_params = 8 * u * (u + e + 1)  # the recurrent kernels alone
      if n_params > reliability.INT32_MAX:
        errors.append(f"--latent_dim={u} (--embedding_dim={e or None}) makes "
                      f"over {n_params:,} parameters; at most "
                      f"{reliability.INT32_MAX:,}")
    for i, sentence in enumerate(self.translate or [], start=1):
      if not sentence.strip():
        errors.append(f"--translate={sentence!r} (sentence {i}) is empty or "
                      "only spaces: nothing to translate")
    return errors


# ----------------------------------------------------------------- the data


@dataclasses.dataclass
class TranslationData:
  """Everything a run needs from the pair file."""

  pair_file: pairs_lib.PairFile
  train_pairs: list[tuple[str, str]]
  val_pairs: list[tuple[str, str]]
  src_vocab: Vocab
  tgt_vocab: Vocab
  train: dict[str, np.ndarray]          # all training pairs, padded to max
  buckets: list[dict[str, np.ndarray]]  # the same rows, by length bucket
  val: dict[str, np.ndarray]            # held-out pairs, padded to max
  max_decode_len: int

  def fit_data(self, batch_size: int, group: int = 1):
    """-> (data, batch_plan) for ``train.fit``: the padded arrays and no plan
    with one bucket, else the buckets and a ``BucketPlan`` over them."""
    if len(self.buckets) == 1:
      return _fit_arrays(self.train), None
    plan = train_lib.BucketPlan(
        sizes=tuple(len(b["src"]) for b in self.buckets),
        batch_size=batch_size, group=group)
    return [_fit_arrays(b) for b in self.buckets], plan


def _fit_arrays(arrays: dict) -> dict:
  return {k: arrays[k] for k in TRAIN_KEYS}


def resolve_data_path(flag_value: str) -> str:
  """--data_path, else $SEQJAX_CMN_PATH, else ../shared/... beside the repo;
  a missing file stops with where the pairs come from."""
  if flag_value:
    path, origin = flag_value, "--data_path"
  elif os.environ.get(ENV_VAR):
    path, origin = os.environ[ENV_VAR], f"${ENV_VAR}"
  else:
    path = os.path.normpath(os.path.join(ROOT, "..", "shared", "data",
                                         "cmn-eng", "cmn.txt"))
    origin = "the default (--data_path unset, $SEQJAX_CMN_PATH unset)"
  if not os.path.isfile(path):
    raise SeqjaxError(
        f"No pair file at {path} (from {origin}). {pairs_lib.HOW_TO_GET} "
        f"Then pass --data_path=/path/to/cmn.txt or set {ENV_VAR}.")
  return path


def encode_pairs(src_vocab: Vocab, tgt_vocab: Vocab, pairs_: list,
                 src_width=None, tgt_width=None) -> dict[str, np.ndarray]:
  return {**vocab_lib.encode_sources(src_vocab, [s for s, _ in pairs_],
                                     src_width),
          **vocab_lib.encode_targets(tgt_vocab, [t for _, t in pairs_],
                                     tgt_width)}


def target_step_cost(cell: str, units: int, tgt_vocab_size: int) -> float:
  """A decoder step's work relative to an encoder step's: both run the
  recurrent matmul (gates x units^2), the decoder also the readout (units x
  vocabulary); inputs are row lookups."""
  gates = 4 if cell == "lstm" else 3
  return 1.0 + tgt_vocab_size / (gates * units)


def bucketize(train: dict[str, np.ndarray], num_buckets: int,
              batch_size: int, target_cost: float = 1.0
              ) -> list[dict[str, np.ndarray]]:
  """``train``'s rows in at most ``num_buckets`` length buckets (each at
  least a batch), each cut to its own longest source and target; the
  limits minimize the padded work (``vocab.length_buckets``)."""
  buckets = []
  for rows, src_w, tgt_w in vocab_lib.length_buckets(
      train["src_len"], train["target_len"], num_buckets,
      min_size=batch_size, target_cost=target_cost):
    bucket = {k: v[rows] for k, v in train.items()}
    for k in ("src", "src_mask"):
      bucket[k] = bucket[k][:, :src_w]
    for k in ("dec_in", "target", "target_mask"):
      bucket[k] = bucket[k][:, :tgt_w]
    buckets.append(bucket)
  return buckets


def build_vocabs(train_pairs: list, level: str) -> tuple[Vocab, Vocab]:
  """From the training pairs only: held-out symbols never seen are unknown."""
  return (Vocab.build([s for s, _ in train_pairs], level),
          Vocab.build([t for _, t in train_pairs], "char", target=True))


def prepare_data(config: TranslateConfig,
                 vocabs: Optional[tuple[Vocab, Vocab]] = None
                 ) -> TranslationData:
  """Load, split, vocabularies (built from the training split unless given)
  and id arrays: the whole data pipeline of the task."""
  path = resolve_data_path(config.data_path)
  pair_file = pairs_lib.load_pairs(path, config.num_samples or None,
                                   config.strict)
  train_pairs, val_pairs = pairs_lib.split_pairs(pair_file.pairs,
                                                 config.validation_split)
  n = len(pair_file.pairs)
  if not train_pairs or not val_pairs:
    raise SeqjaxError(f"--validation_split={config.validation_split} of {n} "
                      "pairs leaves no training or no held-out pair")
  if config.batch_size > len(train_pairs):
    raise SeqjaxError(f"--batch_size={config.batch_size} exceeds the "
                      f"{len(train_pairs)} training pairs (--num_samples="
                      f"{config.num_samples}, --validation_split="
                      f"{config.validation_split})")
  src_vocab, tgt_vocab = vocabs or build_vocabs(train_pairs, config.level)
  train = encode_pairs(src_vocab, tgt_vocab, train_pairs)
  buckets = bucketize(train, config.num_buckets, config.batch_size,
                      target_step_cost(config.cell, config.latent_dim,
                                       len(tgt_vocab)))
  val = encode_pairs(src_vocab, tgt_vocab, val_pairs)
  max_decode_len = config.max_decode_len or int(
      max(train["target_len"].max(), val["target_len"].max()))
  return TranslationData(pair_file, train_pairs, val_pairs, src_vocab,
                         tgt_vocab, train, buckets, val, max_decode_len)


def save_vocabs(workdir: str, src_vocab: Vocab, tgt_vocab: Vocab,
                max_decode_len: int,
                max_source_len: Optional[int] = None) -> None:
  saved = {"source": src_vocab.to_dict(), "target": tgt_vocab.to_dict(),
           "max_decode_len": max_decode_len}
  if max_source_len is not None:  # --translate truncates longer sentences
    saved["max_source_len"] = int(max_source_len)
  experiment.write_json_atomic(os.path.join(workdir, VOCAB_FILE), saved)


def saved_max_source_len(workdir: str) -> Optional[int]:
  """The longest training source (in tokens) vocab.json records; None for a
  file written before it was recorded."""
  try:
    with open(os.path.join(workdir, VOCAB_FILE), encoding="utf-8") as f:
      value = json.load(f).get("max_source_len")
    return int(value) if value else None
  except (OSError, ValueError, TypeError, AttributeError):
    return None


def load_vocabs(workdir: str) -> Optional[tuple[Vocab, Vocab, int]]:
  path = os.path.join(workdir, VOCAB_FILE)
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
    return (Vocab.from_dict(saved["source"]), Vocab.from_dict(saved["target"]),
            int(saved["max_decode_len"]))
  except (ValueError, KeyError, TypeError) as e:
    raise SeqjaxError(f"{path} is not a vocabulary file of this task: "
                      f"{e}") from e


# ---------------------------------------------------------------- the model


def model_config(config: TranslateConfig, src_vocab: Vocab,
                 tgt_vocab: Vocab) -> dict:
  """What a checkpoint must match (and what --translate rebuilds from)."""
  return {"task": TASK, "level": config.level, "cell": config.cell,
          "latent_dim": config.latent_dim,
          "embedding_dim": config.embedding_dim,
          "src_vocab": len(src_vocab), "tgt_vocab": len(tgt_vocab),
          "vocab": src_vocab.fingerprint() + tgt_vocab.fingerprint(),
          "teacher_forcing": config.teacher_forcing,
          "feedback": None if config.teacher_forcing else config.feedback,
          "optimizer": config.optimizer}


def build_model(config: TranslateConfig, src_vocab: Vocab,
                tgt_vocab: Vocab) -> Seq2Seq:
  return Seq2Seq(src_vocab=len(src_vocab), tgt_vocab=len(tgt_vocab),
                 units=config.latent_dim, cell=config.cell,
                 embedding_dim=config.embedding_dim)


def make_loss(config: TranslateConfig, model: Seq2Seq):
  if config.teacher_forcing:
    return train_lib.make_seq2seq_loss(model)
  return train_lib.make_free_running_loss(model, vocab_lib.START_ID,
                                          config.feedback)


def make_decoder(config: TranslateConfig, model: Seq2Seq, max_len: int):
  """Greedy decoding as the model was trained (see the module docstring)."""
  kwargs = dict(max_len=max_len, start_id=vocab_lib.START_ID,
                stop_id=vocab_lib.END_ID, pad_id=vocab_lib.PAD_ID)
  if config.teacher_forcing or config.feedback == "argmax":
    return decode_lib.make_greedy_decoder(model, **kwargs)
  return decode_lib.make_free_running_decoder(model, feedback=config.feedback,
                                              **kwargs)


# -------------------------------------------------------------- evaluation


def evaluate_loss(eval_step, params, arrays: dict, batch_size: int) -> dict:
  """Held-out loss and masked token accuracy, averaged over target tokens.

  Fixed-size batches (the last padded with rows whose mask is all False)
  so the step compiles once."""
  data = _fit_arrays(arrays)
  n = len(data["src"])
  sums, tokens = {}, 0.0
  for start in range(0, n, batch_size):
    batch = {k: v[start:start + batch_size] for k, v in data.items()}
    short = batch_size - len(batch["src"])
    if short:
      batch = {k: np.concatenate([v, np.repeat(v[-1:], short, 0)])
               for k, v in batch.items()}
      batch["target_mask"][-short:] = False
    count = float(batch["target_mask"].sum())
    for name, value in jax.device_get(eval_step(params, batch)).items():
      sums[name] = sums.get(name, 0.0) + float(value) * count
    tokens += count
  return {name: total / max(tokens, 1.0) for name, total in sums.items()}


def decode_texts(decoder, params, tgt_vocab: Vocab, arrays: dict,
                 batch_size: int) -> list[str]:
  tokens = decode_lib.decode_in_batches(decoder, params, arrays["src"],
                                        batch_size, arrays["src_mask"])
  return [tgt_vocab.decode(row) for row in tokens]


def score(hypotheses: list[str], references: list[str]) -> dict:
  return {"exact_match": float(np.mean([h == r for h, r in
                                        zip(hypotheses, references)])),
          "bleu": metrics.corpus_bleu(hypotheses, references),
          "chrf": metrics.corpus_chrf(hypotheses, references)}


# ------------------------------------------------------------------ the run


def run(config: TranslateConfig) -> dict:
  experiment.check_config(config)
  if config.translate:
    return translate_sentences(config)
  checkpointer = None
  workdir = config.workdir
  restored = (load_vocabs(workdir) if workdir and os.path.isdir(workdir)
              else None)
  data = prepare_data(config, restored[:2] if restored else None)
  if restored:
    data.max_decode_len = restored[2]
  src_vocab, tgt_vocab = data.src_vocab, data.tgt_vocab
  print(pairs_lib.describe_malformed(data.pair_file) or
        f"Read {len(data.pair_file.pairs)} pairs from {data.pair_file.path}.")
  print(f"Number of samples: {len(data.pair_file.pairs)} "
        f"({len(data.train_pairs)} training, {len(data.val_pairs)} held out)")
  print(f"Number of unique input tokens: {len(src_vocab) - 2} (+ padding, "
        f"unknown)")
  print(f"Number of unique output tokens: {len(tgt_vocab) - 2} (with \\t, "
        f"\\n; + padding, unknown)")
  print(f"Max sequence length for inputs: {data.train['src'].shape[1]}")
  print(f"Max sequence length for outputs: {data.train['target'].shape[1]}")
  print("Length buckets (pairs, source x target width): " + ", ".join(
      f"{len(b['src'])} {b['src'].shape[1]}x{b['target'].shape[1]}"
      for b in data.buckets))

  workdir = experiment.resolve_workdir(config, TASK)
  mconfig = model_config(config, src_vocab, tgt_vocab)
  # A mismatched checkpoint stops the run before anything is written.
  checkpointer = Checkpointer(workdir, mconfig)
  checkpointer.check_compatible()
  checkpointer.close()
  if not restored:
    save_vocabs(workdir, src_vocab, tgt_vocab, data.max_decode_len,
                max_source_len=data.train["src"].shape[1])

  model = build_model(config, src_vocab, tgt_vocab)
  params = jax.jit(model.init)(jax.random.key(config.seed),
                               data.train["src"][:1], data.train["dec_in"][:1])
  print(summary.format_summary(
      params, title=f"Seq2Seq ({config.cell}, {config.level} level)"))
  loss_fn = make_loss(config, model)
  eval_step = train_lib.make_eval_step(loss_fn)
  # Runs of steps_per_call batches of one bucket fill each jitted call.
  fit_data, plan = data.fit_data(config.batch_size, config.steps_per_call)

  timing = {"eval_seconds": 0.0, "epoch_seconds": [], "t": 0.0}

  def epoch_end(state, epoch):
    t0 = time.perf_counter()
    timing["epoch_seconds"].append(t0 - timing["t"])
    row = evaluate_loss(eval_step, state.params, data.val,
                        config.eval_batch_size)
    print(f"Epoch {epoch}/{config.epochs}: {timing['epoch_seconds'][-1]:.1f}s"
          f" val_loss {row['loss']:.4f} val_token_accuracy "
          f"{row['token_accuracy']:.4f}", flush=True)
    timing["t"] = time.perf_counter()
    timing["eval_seconds"] += timing["t"] - t0
    return {"val_loss": row["loss"],
            "val_token_accuracy": row["token_accuracy"]}

  timing["t"] = time.perf_counter()
  state, stats = experiment.train_or_restore(
      model=model, params=params, config=config, workdir=workdir,
      model_config=mconfig, data=fit_data, loss_fn=loss_fn,
      epoch_end_fn=epoch_end, batch_plan=plan)

  t0 = time.perf_counter()
  held_out = evaluate_loss(eval_step, state.params, data.val,
                           config.eval_batch_size)
  decoder = make_decoder(config, model, data.max_decode_len)
  hypotheses = decode_texts(decoder, state.params, tgt_vocab, data.val,
                            config.eval_batch_size)
  references = [t for _, t in data.val_pairs]
  scores = score(hypotheses, references)
  eval_seconds = time.perf_counter() - t0
  examples = []
  if config.n_examples:
    for i in np.linspace(0, len(hypotheses) - 1,
                         min(config.n_examples, len(hypotheses))).astype(int):
      src, ref = data.val_pairs[i]
      examples.append({"input": src, "decoded": hypotheses[i],
                       "reference": ref})
      print(f"-\nInput sentence: {src}\nDecoded sentence: {hypotheses[i]}\n"
            f"Reference: {ref}")
  print(f"Held out ({len(references)} pairs): loss {held_out['loss']:.4f}, "
        f"token accuracy {held_out['token_accuracy'] * 100:.2f}%, exact match "
        f"{scores['exact_match'] * 100:.2f}%, BLEU {scores['bleu']:.2f}, "
        f"chrF {scores['chrf']:.2f}")

  epochs_run = len(timing["epoch_seconds"])
  steady = timing["epoch_seconds"][1:]
  results = experiment.base_results(TASK, config)
  results.update(
      workdir=workdir, data_path=data.pair_file.path,
      n_pairs=len(data.pair_file.pairs), n_train=len(data.train_pairs),
      n_val=len(data.val_pairs),
      malformed_lines=len(data.pair_file.malformed),
      src_vocab=len(src_vocab), tgt_vocab=len(tgt_vocab),
      val_unknown_source_symbols=int(data.val["src_unknown"].sum()),
      buckets=[list(b["src"].shape) + [b["target"].shape[1]]
               for b in data.buckets] if plan else None,
      step=int(state.step), epochs_completed=int(state.step) // (
          plan.steps_per_epoch if plan else
          len(data.train_pairs) // config.batch_size),
      val_loss=held_out["loss"], val_token_accuracy=held_out["token_accuracy"],
      **{f"val_{k}": v for k, v in scores.items()},
      examples=examples, eval_seconds=eval_seconds,
      train_token_accuracy=stats.last_metrics.get("token_accuracy"),
      train_eval_seconds=timing["eval_seconds"],
      epoch_seconds=timing["epoch_seconds"],
      steady_epoch_seconds=(float(np.mean(steady)) if steady else None),
      epochs_run=epochs_run,
      **experiment.training_results(stats, config.batch_size, params))
  experiment.write_json_atomic(f"{workdir}/results.json", results)
  print(f"Wrote {workdir}/results.json")
  return results


def translate_sentences(config: TranslateConfig) -> dict:
  """--translate: the model in --workdir translates the given sentences."""
  workdir = config.workdir
  saved = (Checkpointer(workdir, {}).saved_config()
           if os.path.isdir(workdir) else None)
  vocabs = load_vocabs(workdir) if saved else None
  if saved is None or vocabs is None:
    raise SeqjaxError(f"--translate needs a trained model: no checkpoint and "
                      f"{VOCAB_FILE} in --workdir={workdir}")
  if saved.get("task") != TASK:
    raise SeqjaxError(f"--workdir={workdir} holds a {saved.get('task')!r} "
                      "model, not a translation model")
  src_vocab, tgt_vocab, max_decode_len = vocabs
  config = dataclasses.replace(
      config, eval_only=True, level=saved["level"], cell=saved["cell"],
      latent_dim=saved["latent_dim"], embedding_dim=saved["embedding_dim"],
      teacher_forcing=saved["teacher_forcing"],
      feedback=saved["feedback"] or config.feedback,
      optimizer=saved["optimizer"])
  model = build_model(config, src_vocab, tgt_vocab)
  # Longer than any training source: truncated (the encoder never saw such
  # lengths), with a warning below.
  max_src = saved_max_source_len(workdir)
  tokens = [vocab_lib.tokenize(s, src_vocab.level) for s in config.translate]
  width = max(len(t) for t in tokens)
  if max_src is not None:
    width = min(width, max_src)
  src = vocab_lib.encode_sources(src_vocab, config.translate, width)
  params = jax.jit(model.init)(jax.random.key(0), src["src"][:1],
                               src["src"][:1, :1] * 0)
  state, _ = experiment.train_or_restore(
      model=model, params=params, config=config, workdir=workdir,
      model_config=model_config(config, src_vocab, tgt_vocab), data={},
      loss_fn=None)
  decoder = make_decoder(config, model, max_decode_len)
  decoded = decode_texts(decoder, state.params, tgt_vocab, src,
                         len(config.translate))
  out = []
  for sentence, sym, text in zip(config.translate, tokens, decoded):
    unknown = src_vocab.encode(sentence)[1]
    dropped = sym[width:]
    if dropped:
      joiner = "" if src_vocab.level == "char" else " "
      logging.warning("--translate: truncated to %d %ss, the longest "
                      "training source; dropped %r", width,
                      src_vocab.level, joiner.join(dropped))
    print(f"-\nInput sentence: {sentence}\nDecoded sentence: {text}")
    if dropped:
      print(f"(truncated to the first {width} {src_vocab.level}s, the "
            f"longest training source; dropped "
            f"{joiner.join(dropped)!r})")
    if unknown:
      print(f"(translated with the unknown symbol in place of "
            f"{', '.join(repr(u) for u in dict.fromkeys(unknown))}: not in "
            "the training vocabulary)")
    out.append({"input": sentence, "decoded": text, "unknown": unknown,
                "truncated": len(dropped)})
  return {"translations": out}


if __name__ == "__main__":
  from experiments import common
  common.main(TranslateConfig, run)
