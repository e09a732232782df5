"""Character-level English -> Chinese translation on the Tatoeba pairs.

The Keras ``lstm_seq2seq`` example on ``cmn.txt``: the first ``num_samples``
pairs, the last ``validation_split`` of them held out (never trained on; all
reported translations and metrics are on them), an LSTM encoder-decoder with
256 units trained with teacher forcing and RMSprop, batch 64. Targets are
``"\\t" + sentence + "\\n"``; decoding is batched greedy search (one compiled
loop) that stops at ``"\\n"``; ``--beam_size=K`` decodes the final
evaluation (and ``--translate``) by beam search instead
(``seqjax.decoding``, ``--length_penalty``, ``--n_best`` translations with
their scores), ``--sampling_temperature`` (with ``--top_k``, ``--top_p``,
``--sampling_seed``) by sampling (``--n_best`` samples a sentence), and
``--dev_beam_size`` the per-epoch dev decoding (greedy by default: fast).

Differences from the Keras example: token ids instead of one-hot arrays (the
same model: a one-hot times a kernel is a row), padding masked out of the
encoder, the loss and the metrics, and length buckets: training sentences are
grouped by target length into ``--num_buckets`` buckets, each padded only to
its own longest sentence (the limits chosen to minimize the padded work), so
the step compiles once per bucket.

Variants: ``--cell=gru``; ``--level=word --embedding_dim=N`` (English words
through an Embedding; Chinese targets stay characters); ``--level=subword``
(SentencePiece pieces trained on the training split, saved in the workdir;
targets too unless ``--target_level=char``: ``--src_vocab_size``,
``--tgt_vocab_size``, ``--subword_model``);
``--teacher_forcing=false``: the decoder is fed its own previous prediction
for every target step, never a target token. It is fed the predicted softmax
distribution (``--feedback=softmax``, as the Keras "no teacher forcing" model,
whose Dense softmax output is its next input): that is differentiable, so the
loss of later steps also trains earlier predictions, while the argmax
(``--feedback=argmax``) passes no gradient back through the loop. Such a
model decodes the way it was trained (softmax fed back, argmax emitted).

Evaluation: the held-out set is decoded greedily after every epoch (its
loss, chrF and BLEU printed and logged as ``val_*``) and at the end; scores
are sacrebleu's (``seqjax.evaluate.score``: corpus chrF, BLEU with
``tokenize="zh"``, their signatures; exact match against any reference),
and again after converting hypotheses and references to simplified Chinese
(``*_simplified``, OpenCC). ``--split=random`` is the split reported
results use (``../shared/data/cmn-eng/README.md``): all pairs (unless
``--num_samples``), grouped by English sentence, ``--num_test`` test and
``--num_dev`` dev sentences drawn with ``--split_seed``, each with all its
translations as references. Then the dev set is what each epoch decodes
(``dev_chrf``: the selection metric) and the test set is decoded only at
the end (``test_chrf``, ...). ``--target_script=simplified|traditional``
converts training targets and references with OpenCC.

  python -m experiments.translate --epochs=30 --workdir=runs/cmn
  python -m experiments.translate --split=random --epochs=30 --workdir=runs/r
  python -m experiments.translate --workdir=runs/cmn --translate="I'm hungry."

The data pipeline is ``seqjax.data.translation``, the model and inference
``seqjax.translation``. ``--translate``: a symbol not in the training
vocabulary is translated as the unknown symbol and named; an empty sentence
is refused by ``validate()``; one longer than the longest training source
is truncated to it with a warning naming what was dropped. ``--translate=-``
writes one translation a line to standard output and these notes, named by
line number, to standard error.

``--score=FILE`` scores the model in ``--workdir`` on FILE's
source<TAB>reference lines: each pair's log-probability and its tokens'
(the reference teacher forced, the end symbol included: what the greedy
search's score sums for its own output), one JSON line a pair, to standard
output or ``--score_output``; compiled once per padded shape as decoding
is. A line without both columns stops the run, naming the file and line.

``--eval_only`` evaluates the model in ``--workdir`` with the model and data
flags its run recorded (results.json, the checkpoint, vocab.json); a flag
given explicitly that differs from its record is refused by name. A run that
fails before its first checkpoint removes the vocab.json it wrote.

``--ensemble=WORKDIR2,WORKDIR3`` decodes ``--translate`` and
``--eval_only``'s final evaluation with those models and --workdir's as
one ensemble (``seqjax.decoding.Ensemble``: their log-probabilities
averaged every step); a member with other vocabularies or decoding (or,
for ``--eval_only``, other data) stops the run before any work.

``--ensemble_members=K`` trains the seeds ``--seed``..``--seed+K-1`` as
one vectorized group (``seqjax.group_runner``), each member in
``--workdir``'s ``member=i`` as its lone run would be, then evaluates the
K selected members as one ensemble (results.json in ``--workdir``, with
the members and the training and wall seconds); ``--translate`` and
``--eval_only`` on that workdir decode the ensemble.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from seqjax import attention as attention_lib
from seqjax import config as config_lib
from seqjax import ensembles
from seqjax import limits
from seqjax import task as task_lib
from seqjax import train as train_lib
from seqjax import translate_eval
from seqjax import translate_inference
from seqjax import translate_runs
from seqjax import translation
from seqjax.config import field
from seqjax.data import script as script_lib
from seqjax.data import subword as subword_lib
from seqjax.data import translation as data_lib
from seqjax.data import vocab as vocab_lib
from seqjax.models import FEEDBACKS
# Also called from here by the binary's users (tests, benchmarks).
from seqjax.translate_inference import score_pairs, translate_stream  # pylint: disable=unused-import
from seqjax.translate_runs import (ENV_VAR, flag_error, levels, model_spec,  # pylint: disable=unused-import
                                   num_samples, prepare_data,
                                   recorded_config, resolve_data_path)


@dataclasses.dataclass
class TranslateConfig(config_lib.DevDecodingConfig):
  # The Keras example's training settings.
  epochs: int = field(100, "Passes over the training pairs (Keras: 100).",
                      low=1, high=limits.INT32_MAX)
  batch_size: int = field(64, "Training batch size (Keras: 64).", low=1,
                          high=limits.MAX_BATCH)
  optimizer: str = field("rmsprop", "adam, rmsprop (Keras) or sgd.",
                         choices=train_lib.OPTIMIZERS)

  data_path: str = field(
      "", f"The pair file (cmn.txt). Empty: ${ENV_VAR}, else "
      "../shared/data/cmn-eng/cmn.txt beside the repository.")
  num_samples: Optional[int] = field(
      None, "Use the first N valid pairs; 0: all; unset: 10000 with "
      "--split=tail (Keras), all with --split=random (the reported split).",
      low=0, high=limits.MAX_EXAMPLES)
  split: str = field(
      "tail", "tail: the last --validation_split of the pairs held out "
      "(Keras; the file is sorted by length, so the longest); random: by "
      "English sentence, --num_test and --num_dev sentences held out with "
      "all their translations as references (the split reported results "
      "use, ../shared/data/cmn-eng/README.md).", choices=data_lib.SPLITS)
  validation_split: float = field(0.2, "--split=tail: the fraction of the "
                                  "pairs, taken from the end as in Keras, "
                                  "held out for evaluation.",
                                  above=0.0, below=1.0)
  split_seed: int = field(0, "--split=random: the seed of the sentences' "
                          "permutation.", low=0, high=limits.MAX_SEED)
  num_test: int = field(1000, "--split=random: test sentences, scored once "
                        "at the end (never looked at in training).", low=1,
                        high=limits.MAX_EXAMPLES)
  num_dev: int = field(500, "--split=random: dev sentences, decoded and "
                       "scored after every epoch (model selection).", low=1,
                       high=limits.MAX_EXAMPLES)
  target_script: str = field(
      "as_is", "Convert the Chinese targets (training pairs and references) "
      "to one script with OpenCC: as_is, simplified or traditional.",
      choices=script_lib.SCRIPTS)
  strict: bool = field(False, "Stop at a malformed line of the pair file "
                       "instead of skipping and counting it.")
  level: str = field("char", "The English source's symbols: char "
                     "(Keras); word (needs --embedding_dim; Chinese targets "
                     "stay characters); subword: SentencePiece pieces "
                     "(needs --embedding_dim; targets too unless "
                     "--target_level=char).", choices=vocab_lib.LEVELS)
  target_level: Optional[str] = field(
      None, "The Chinese target's symbols: char or subword (SentencePiece); "
      "unset: subword with --level=subword, else char.",
      choices=vocab_lib.TARGET_LEVELS)
  src_vocab_size: int = field(
      4000, "A subword source's SentencePiece vocabulary size (at most; a "
      "small corpus may give fewer pieces).", low=16, high=limits.MAX_VOCAB)
  tgt_vocab_size: int = field(
      4000, "A subword target's SentencePiece vocabulary size (at most); at "
      "least the training targets' distinct characters (3,500 on cmn.txt).",
      low=16, high=limits.MAX_VOCAB)
  subword_model: str = field(
      "unigram", "The SentencePiece algorithm of subword sides: unigram or "
      "bpe. Both are trained on the training split only and saved in the "
      "workdir (spm_source.model, spm_target.model).",
      choices=subword_lib.MODEL_TYPES)
  cell: str = config_lib.cell_field()
  latent_dim: int = field(256, "Units of encoder and decoder (Keras: 256).",
                          low=1, high=limits.MAX_UNITS)
  embedding_dim: Optional[int] = field(
      None, "Embedding width in front of encoder and decoder; unset: one-hot "
      "inputs (a kernel row lookup).", low=1, high=limits.MAX_UNITS)
  teacher_forcing: bool = field(True, "Feed the decoder the true previous "
                                "character in training; false: its own "
                                "prediction.")
  feedback: str = field("softmax", "Without teacher forcing, what is fed "
                        "back: softmax (the distribution, as Keras) or "
                        "argmax (the token).", choices=FEEDBACKS)
  encoder_layers: int = field(1, "Stacked encoder layers.", low=1,
                              high=limits.MAX_LENGTH)
  decoder_layers: int = field(1, "Stacked decoder layers.", low=1,
                              high=limits.MAX_LENGTH)
  bidirectional: bool = field(False, "A backward layer beside each encoder "
                              "layer (outputs concatenated; a bridge maps "
                              "the final carries to the decoder's).")
  attention: str = field("none", "none (Keras), bahdanau (additive) or luong "
                         "(multiplicative) attention over the source.",
                         choices=attention_lib.KINDS)
  attention_score: str = field(
      "general", "Luong's score: " + ", ".join(attention_lib.SCORES)
      + " (Bahdanau's is additive).", choices=tuple(attention_lib.SCORES))
  input_feeding: bool = field(True, "Luong: feed the attentional state to "
                              "the next decoder step.")
  dropout: float = field(0.0, "Dropout on embeddings, between layers and "
                         "before the readout (training only).", low=0.0,
                         below=1.0)
  label_smoothing: float = field(0.0, "Label smoothing of the training loss.",
                                 low=0.0, below=1.0)
  bucket_by: str = field("target", "Order of the pairs the buckets cut: "
                         "target (by target length) or both (by each pair's "
                         "work, source and target: less source padding).",
                         choices=vocab_lib.BUCKET_BY)
  num_buckets: int = field(4, "Length buckets of the training pairs (1: pad "
                           "all to the longest, as Keras).", low=1,
                           high=limits.MAX_LENGTH)
  max_decode_len: int = field(0, "Decoding steps at most; 0: the longest "
                              "target (with its end symbol) of the pairs.",
                              low=0, high=limits.MAX_LENGTH)
  eval_batch_size: int = field(256, "Batch size of held-out evaluation.",
                               low=1, high=limits.MAX_BATCH)
  n_examples: int = field(10, "Held-out translations to print.", low=0,
                          high=limits.MAX_EXAMPLES)
  n_attention_plots: int = field(4, "With attention: heat maps of this many "
                                 "dev sentences (attention.png/.json).",
                                 low=0, high=100)
  translate: Optional[list[str]] = field(
      None, "Translate these sentences with the model in --workdir (no "
      "training; the model settings come from its checkpoint; the best "
      "checkpoint where --keep_best kept one, else the latest). Repeatable; "
      "'-': read standard input, one sentence a line, one translation a "
      "line out.")
  ensemble: str = field(
      "", "Comma-separated workdirs of more trained translation models, "
      "decoded with --workdir's as one ensemble (their log-probabilities "
      "averaged every step) by --translate and --eval_only; they must share "
      "its vocabularies (vocab.json) and decoding, and with --eval_only its "
      "data. Members may differ in architecture.")
  ensemble_members: int = field(
      1, "Train K models, seeds --seed..--seed+K-1, as one vectorized group "
      "(in --workdir's member=0..K-1, each selected on dev as a lone run), "
      "then evaluate them as one ensemble (results.json in --workdir); "
      "--translate and --eval_only on --workdir then decode that ensemble. "
      "1: one model.", low=1, high=limits.MAX_BATCH)
  score: str = field(
      "", "Score the model in --workdir on this file, one "
      "source<TAB>reference a line: each pair's log-probability and its "
      "tokens' (teacher forced, the end symbol included) as JSON lines to "
      "--score_output (no training).")
  score_output: str = field("", "--score: write the JSON lines here "
                            "instead of standard output.")
  n_best: int = field(1, "--translate: print the N best translations of "
                      "the beam search with their scores (at most "
                      "--beam_size), or N samples a sentence with their "
                      "log-probabilities (--sampling_temperature).", low=1,
                      high=limits.MAX_BATCH)

  def ensemble_workdirs(self) -> list[str]:
    """--ensemble's workdirs (empty: --workdir's model alone)."""
    return self.ensemble.split(",") if self.ensemble else []

  def members_errors(self) -> list[str]:
    """What --ensemble_members=K (a vectorized group) cannot honour."""
    k = self.ensemble_members
    if k == 1:
      return []
    refused = [("ensemble", "an ensemble of other workdirs"),
               ("translate", "--translate on its --workdir decodes the "
                "ensemble"), ("eval_only", "--eval_only on its --workdir "
                "evaluates the ensemble"), ("score", "scoring takes one model"),
               ("dropout", "a group's members would share the first "
                "member's dropout masks"), ("ema_decay", "a group keeps no "
                "moving average"), ("lr_schedule", "a group trains with a "
                "constant learning rate"), ("num_processes", "a group runs in "
                "one process")]
    defaults = {f.name: f.default for f in dataclasses.fields(self)}
    return [f"--ensemble_members={k} with --{name}={getattr(self, name)!r}: "
            f"{why}" for name, why in refused
            if getattr(self, name) != defaults[name]] + (
        [f"--ensemble_members={k} with --keep_best_n={self.keep_best_n}: a "
         "group keeps each member's best epoch only"]
        if self.keep_best_n > 1 else [])

  def decodes_stepwise(self) -> bool:
    return translation.decodes_tokens(model_spec(self))

  def validate(self) -> list[str]:
    errors = super().validate()
    if self.n_best > self.beam_size and not self.sampling():
      errors.append(f"--n_best={self.n_best} exceeds --beam_size="
                    f"{self.beam_size}: the search keeps {self.beam_size} "
                    "finished hypotheses")
    if self.level in ("word", "subword") and self.embedding_dim is None:
      errors.append(f"--level={self.level} needs --embedding_dim "
                    f"({self.level}s go through an Embedding layer)")
    if (self.attention == "luong" and self.bidirectional
        and attention_lib.SCORES[self.attention_score].same_width):
      errors.append(f"--attention_score={self.attention_score} needs encoder "
                    "outputs of the decoder's size: not with --bidirectional "
                    "(use general)")
    if (self.target_script != script_lib.AS_IS and not self.translate
        and not script_lib.available()):
      errors.append(f"--target_script={self.target_script} needs OpenCC: "
                    f"{script_lib.INSTALL}")
    if self.ensemble and self.score:
      errors.append("--ensemble with --score: scoring takes one model")
    if self.ensemble and not (self.translate or self.eval_only):
      errors.append("--ensemble needs --translate or --eval_only: it decodes "
                    "trained models (training takes one)")
    if any(not w.strip() for w in self.ensemble_workdirs()):
      errors.append(f"--ensemble={self.ensemble!r} names an empty workdir")
    errors += self.members_errors()
    if self.translate and not self.workdir:
      errors.append("--translate needs --workdir (a trained model's)")
    if self.score and not self.workdir:
      errors.append("--score needs --workdir (a trained model's)")
    if self.score and self.translate:
      errors.append("--score and --translate: one at a time")
    if self.score_output and not self.score:
      errors.append("--score_output needs --score")
    for i, sentence in enumerate(self.translate or [], start=1):
      if not sentence.strip():
        errors.append(f"--translate={sentence!r} (sentence {i}) is empty or "
                      "only spaces: nothing to translate")
    return errors


class TranslateTask(task_lib.Task):
  name = "translate"
  config_cls = TranslateConfig
  metric = "val_chrf"
  size_flags = ("latent_dim", "embedding_dim")

  def metric_for(self, config: TranslateConfig) -> str:
    # A sweep selects: on dev with the random split, never on test.
    return "dev_chrf" if config.split == "random" else self.metric

  def run(self, config: TranslateConfig) -> dict:
    from seqjax import runner  # the training stack: not for --translate
    record = (ensembles.members_record(config.workdir) if config.translate
              or config.eval_only or config.score else None)
    if record is not None:
      return ensembles.run_members(self, config, record,
                                   explicit_fields(config))
    if config.ensemble_members > 1:
      return ensembles.train_members(self, config)
    if config.translate:
      runner.check(config)
      return translate_inference.translate_sentences(config)
    if config.score:
      runner.check(config)
      return translate_inference.score_pairs(config)
    if config.eval_only:
      runner.check(config)
      config = recorded_config(config, explicit_fields(config))
      translate_runs.check_ensemble(config)
    return runner.run(self, config)

  def setup(self, config: TranslateConfig, workdir: str) -> task_lib.Setup:
    return translate_eval.setup(config, workdir)

  def evaluate(self, config: TranslateConfig, setup, state) -> dict:
    return translate_eval.evaluate(config, setup, state)


def explicit_fields(config: TranslateConfig) -> set[str]:
  """The fields set on purpose: in the binary, the flags on its command
  line (or flagfile); called as a library, those not at their defaults."""
  from absl import flags
  names = [f.name for f in dataclasses.fields(config)]
  if flags.FLAGS.is_parsed() and all(n in flags.FLAGS for n in names):
    return {n for n in names if flags.FLAGS[n].present}
  return {f.name for f in dataclasses.fields(config)
          if getattr(config, f.name) != (
              f.default if f.default is not dataclasses.MISSING
              else f.default_factory())}


TASK = task_lib.register(TranslateTask())
run = TASK.run

if __name__ == "__main__":
  from experiments import common
  common.main(TASK)
