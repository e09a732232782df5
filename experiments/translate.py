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

import contextlib
import dataclasses
import functools
import json
import os
import sys
import time
from typing import Optional

import numpy as np
from absl import logging

from seqjax import attention as attention_lib
from seqjax import config as config_lib
from seqjax import decoding
from seqjax import evaluate
from seqjax import limits
from seqjax import task as task_lib
from seqjax import train as train_lib
from seqjax import translation
from seqjax.config import field
from seqjax.data import pairs as pairs_lib
from seqjax.data import script as script_lib
from seqjax.data import subword as subword_lib
from seqjax.data import translation as data_lib
from seqjax.data import vocab as vocab_lib
from seqjax.errors import ParameterError, SeqjaxError
from seqjax.models import FEEDBACKS
from seqjax.settings import ModelSettings

ENV_VAR = "SEQJAX_CMN_PATH"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The library's parameter names that differ from the flags naming them.
FLAG_OF = {"path": "data_path", "script": "target_script",
           "units": "latent_dim"}
NUM_SAMPLES = {"tail": 10_000, "random": 0}  # --num_samples unset (0: all)


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
  cell: str = field("lstm", "Recurrent cell: lstm or gru.",
                    choices=config_lib.CELLS)
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


@dataclasses.dataclass
class Evaluation:
  """What the final evaluation needs beside the state."""

  data: data_lib.TranslationData
  held_out: evaluate.HeldOutLoss   # the epoch-end evaluation (dev or val)
  eval_step: object
  decoder: object
  workdir: str
  member_params: tuple = ()  # --ensemble's models', after --workdir's
  # The ensemble's loss (teacher forced, the members' mean probabilities).
  ensemble_eval_step: object = None

  def decoder_params(self, params):
    """What ``decoder`` decodes with: ``params``, with --ensemble's."""
    if not self.member_params:
      return params
    return decoding.ensemble_params([params, *self.member_params])


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
    record = (members_record(config.workdir) if config.translate or
              config.eval_only or config.score else None)
    if record is not None:
      return run_members(config, record)
    if config.ensemble_members > 1:
      return train_members(config)
    if config.translate:
      runner.check(config)
      return translate_sentences(config)
    if config.score:
      runner.check(config)
      return score_pairs(config)
    if config.eval_only:
      runner.check(config)
      config = recorded_config(config, explicit_fields(config))
      check_ensemble(config)
    return runner.run(self, config)

  def setup(self, config: TranslateConfig, workdir: str) -> task_lib.Setup:
    restored = (data_lib.load_vocab_file(workdir) if os.path.isdir(workdir)
                else None)
    check_trained_data(config, restored, workdir)
    data = prepare_data(config, restored)
    print(data.describe(malformed_note="--strict stops at the first"))
    beam_errors = config.beam_errors(len(data.tgt_vocab))
    if beam_errors:  # before any training
      raise SeqjaxError("; ".join(beam_errors))
    spec = model_spec(config)
    model = translation.build_model(spec, data.src_vocab, data.tgt_vocab)
    loss_fn = translation.make_loss(spec, model, config.seed)
    # Runs of steps_per_call batches of one bucket fill each jitted call.
    fit_data, plan = data.fit_data(config.batch_size, config.steps_per_call)
    eval_step = train_lib.make_eval_step(loss_fn)
    # --ensemble (with --eval_only): the final decoding's other models.
    members = [translation.restore_model(w, *translation.load_records(w))
               for w in config.ensemble_workdirs()]
    ensemble_eval_step = (decoding.make_ensemble_eval_step(
        (model, *(m[1] for m in members))) if members else None)
    decoded = (decoding.Ensemble((model, *(m[1] for m in members)))
               if members else model)
    decoder = translation.make_decoder(spec, decoded, data.max_decode_len,
                                       strategy=config.search())
    dev_decoder = (decoder if config.dev_search() == config.search()
                   and not members else
                   translation.make_decoder(spec, model, data.max_decode_len,
                                            strategy=config.dev_search()))
    # Every epoch: the selection set's loss and chrF / BLEU (dev, or the
    # tail split's val; greedy by default); the test set is only decoded at
    # the end, by --beam_size's search.
    selection = data.selection
    held_out = evaluate.HeldOutLoss(
        eval_step, data_lib.fit_arrays(selection.loss_arrays),
        config.eval_batch_size, config.epochs, decoder=dev_decoder,
        held_out=selection, tgt_vocab=data.tgt_vocab)
    save = None if restored else functools.partial(
        data_lib.save_vocab_file, vocab_file=data_lib.VocabFile(
            data.src_vocab, data.tgt_vocab, data.max_decode_len,
            max_source_len=data.train["src"].shape[1],
            data=data_settings(config)))
    return task_lib.Setup(
        model=model, init_inputs=(data.train["src"][:1],
                                  data.train["dec_in"][:1]),
        train=fit_data, batch_plan=plan, loss_fn=loss_fn,
        model_config=translation.model_config(spec, data.src_vocab,
                                              data.tgt_vocab,
                                              config.optimizer),
        title=f"Seq2Seq ({config.cell}, {config.level} level)",
        epoch_end=held_out, save_files=save,
        data=Evaluation(data, held_out, eval_step, decoder, workdir,
                        tuple(m[2] for m in members), ensemble_eval_step),
        select_metric=f"{selection.name}_chrf", select_maximize=True)

  def evaluate(self, config: TranslateConfig, setup, state) -> dict:
    ev = setup.data
    data, held_out = ev.data, ev.held_out
    t0 = time.perf_counter()
    views = score_views()
    results, shown = {}, {}
    for name, held in data.held_out.items():  # tail: val; random: dev, test
      losses = evaluate.evaluate_loss(
          ev.ensemble_eval_step or ev.eval_step,
          ev.decoder_params(state.params),
          data_lib.fit_arrays(held.loss_arrays), config.eval_batch_size)
      hypotheses = evaluate.decode_texts(ev.decoder,
                                         ev.decoder_params(state.params),
                                         data.tgt_vocab, held.decode_arrays,
                                         config.eval_batch_size,
                                         config.decoding_key())
      scores = evaluate.score_views(hypotheses, held.references, views)
      results.update({f"{name}_loss": losses["loss"],
                      f"{name}_token_accuracy": losses["token_accuracy"],
                      **{f"{name}_{k}": v for k, v in scores.items()}})
      shown[name] = (hypotheses, losses, scores)
    eval_seconds = time.perf_counter() - t0
    print(f"Decoded by {config.search()} search (every epoch's "
          f"{data.selection.name} decoding: {config.dev_search()})")
    if config.ensemble:
      print(f"Decoded by the ensemble of {config.workdir} and "
            f"{', '.join(config.ensemble_workdirs())} (losses and token "
            "accuracies: of the members' mean probabilities, teacher forced)")
    examples = print_held_out(config, data.reported,
                              *shown[data.reported.name])
    for name, held in data.held_out.items():
      print_scores(held, *shown[name][1:])
    if (config.attention != "none" and config.n_attention_plots
        and not config.ensemble):  # the plots are of one model's attention
      save_attention(config, setup, state, ev)
    plan = setup.batch_plan
    steady = held_out.epoch_seconds[1:]
    return dict(
        **data.counts(), split_settings=data_settings(config),
        reported_set=data.reported.name, select_metric=setup.select_metric,
        decoder=config.describe_search(),
        dev_decoder=config.dev_search().describe(),
        **({"ensemble": [config.workdir, *config.ensemble_workdirs()]}
           if config.ensemble else {}),
        epochs_completed=int(state.step) // (
            plan.steps_per_epoch if plan else
            len(data.train_pairs) // config.batch_size),
        **results, examples=examples, eval_seconds=eval_seconds,
        train_eval_seconds=held_out.eval_seconds,
        epoch_seconds=held_out.epoch_seconds,
        steady_epoch_seconds=(float(np.mean(steady)) if steady else None),
        epochs_run=len(held_out.epoch_seconds))


MEMBERS_KEY = "ensemble_members"  # results.json of a group's ensemble


def members_record(workdir: str) -> Optional[dict]:
  """results.json of ``workdir`` where --ensemble_members trained a group
  there (its members' subdirectories under MEMBERS_KEY), else None."""
  from seqjax import runner
  results = runner.read_results(workdir) if workdir else None
  if results and isinstance(results.get(MEMBERS_KEY), list):
    return results
  return None


def member_configs(config: TranslateConfig, workdir: str
                   ) -> list[TranslateConfig]:
  """The group's members: seeds --seed.., each in ``workdir/member=i``."""
  return [dataclasses.replace(config, seed=config.seed + i,
                              ensemble_members=1,
                              workdir=os.path.join(workdir, f"member={i}"))
          for i in range(config.ensemble_members)]


def train_members(config: TranslateConfig) -> dict:
  """--ensemble_members=K: the K members trained as one vectorized group,
  then evaluated as one ensemble; -> its results (results.json in
  --workdir, with the members and the training and wall seconds)."""
  from seqjax import group_runner, runner
  t0 = time.perf_counter()
  runner.check(config)
  workdir = runner.make_workdir(runner.default_workdir(config, TASK.name))
  configs = member_configs(config, workdir)
  errors = group_runner.run_group(TASK, configs)
  failed = [f"{c.workdir}: {e}" for c, e in zip(configs, errors) if e]
  if failed:
    raise SeqjaxError("--ensemble_members: " + "; ".join(failed))
  trained = [runner.read_results(c.workdir) for c in configs]
  record = {
      MEMBERS_KEY: [os.path.basename(c.workdir) for c in configs],
      "member_seeds": [c.seed for c in configs],
      "member_selected_steps": [r.get("selected_step") for r in trained],
      # One loop trains every member: the group's seconds, not a sum.
      "train_seconds": max(r["train_seconds"] for r in trained),
      "flags": dataclasses.asdict(config)}
  results = evaluate_members(config, workdir, record, set())
  results["wall_seconds"] = time.perf_counter() - t0
  runner.write_results(workdir, results)
  return results


def run_members(config: TranslateConfig, record: dict) -> dict:
  """--translate or --eval_only on a group's --workdir: its ensemble."""
  from seqjax import runner
  members = [os.path.join(config.workdir, m) for m in record[MEMBERS_KEY]]
  where = (f"--workdir={config.workdir} holds the ensemble of "
           f"{len(members)} members ({', '.join(record[MEMBERS_KEY])})")
  if config.ensemble or config.score:
    flag = "--ensemble" if config.ensemble else "--score"
    raise SeqjaxError(f"{flag} with {where}: name one member's workdir")
  runner.check(config)
  if config.translate:
    return translate_sentences(dataclasses.replace(
        config, workdir=members[0], ensemble=",".join(members[1:])))
  kept = {k: record[k] for k in record if k in (
      MEMBERS_KEY, "member_seeds", "member_selected_steps", "train_seconds",
      "wall_seconds", "flags")}
  results = evaluate_members(config, config.workdir, kept,
                             explicit_fields(config))
  runner.write_results(config.workdir, results)
  return results


def evaluate_members(config: TranslateConfig, workdir: str, record: dict,
                     explicit: set[str]) -> dict:
  """The ensemble of ``record``'s members (each its selected state)
  evaluated as ``--eval_only --ensemble`` evaluates one; -> the results
  (``record`` included) to write in ``workdir``."""
  from seqjax import runner
  members = [os.path.join(workdir, m) for m in record[MEMBERS_KEY]]
  lead = dataclasses.replace(config, workdir=members[0], eval_only=True,
                             ensemble=",".join(members[1:]),
                             ensemble_members=1)
  lead = recorded_config(lead, explicit)
  check_ensemble(lead)
  setup = TASK.setup(lead, members[0])
  _, _, params, step = translation.restore_model(
      members[0], *translation.load_records(members[0]))
  state = _Evaluated(params, step)
  results = runner.base_results(TASK.name, config)
  results.update(record, workdir=workdir, step=step)
  results.update(TASK.evaluate(lead, setup, state))
  return results


@dataclasses.dataclass
class _Evaluated:
  """What ``TranslateTask.evaluate`` reads of a state."""
  params: object
  step: int


def save_attention(config: TranslateConfig, setup, state, ev) -> None:
  """The attention weights of the first --n_attention_plots sentences of the
  selection set (dev, or val): attention.json, and attention.png drawn
  where matplotlib is installed."""
  data = ev.data
  sentences = data.selection.sources[:config.n_attention_plots]
  from seqjax import runner
  examples = translation.attention_examples(
      model_spec(config), setup.model, state.params, data.src_vocab,
      data.tgt_vocab, sentences, data.max_decode_len)
  runner.write_json_atomic(os.path.join(ev.workdir, "attention.json"),
                           [e.to_dict() for e in examples])
  try:
    from seqjax import attention_plot
    font = attention_plot.draw(os.path.join(ev.workdir, "attention.png"),
                               examples)
  except ImportError:
    print("attention.json written; attention.png needs matplotlib "
          "(pip install 'seqjax[plot]')")
    return
  print(f"Attention heat maps of {len(examples)} {data.selection.name} "
        f"sentences: {ev.workdir}/attention.png (" + (
            f"Chinese in {font})" if font else "no CJK font installed: "
            "Chinese symbols show their indices; see README.md, Attention "
            "plots)"))


def score_views() -> dict:
  """The scores reported beside the raw ones: hypotheses and references
  both converted to simplified Chinese (the corpus mixes the scripts);
  none, with a warning, without OpenCC."""
  if not script_lib.available():
    logging.warning("OpenCC is not installed (%s): no _simplified scores",
                    script_lib.INSTALL)
    return {}
  return {"simplified": script_lib.converter("simplified")}


def data_settings(config: TranslateConfig) -> dict:
  """The split and target script of these flags, as vocab.json records."""
  return data_lib.data_settings(
      split=config.split, target_script=config.target_script,
      split_seed=config.split_seed, num_test=config.num_test,
      num_dev=config.num_dev, num_samples=num_samples(config),
      levels=levels(config))


def levels(config: TranslateConfig) -> data_lib.Levels:
  """Each side's symbols (--level, --target_level) and subword settings."""
  target = config.target_level or (
      "subword" if config.level == "subword" else "char")
  return data_lib.Levels(config.level, target, config.src_vocab_size,
                         config.tgt_vocab_size, config.subword_model)


def check_trained_data(config: TranslateConfig,
                       restored: Optional[data_lib.VocabFile],
                       workdir: str) -> None:
  """A model resumed or evaluated in ``workdir`` must have been trained on
  the same split, target script and subword settings (another split's
  held-out sentences may be its training ones); stops naming the flags
  otherwise."""
  if restored is None:
    return
  trained = dict(restored.data or data_lib.UNRECORDED_DATA)
  now = data_settings(config)
  if trained != now:
    # Levels are recorded only with a subword side: name both sides' here.
    trained.setdefault("level", restored.source.level)
    trained.setdefault("target_level", restored.target.level)
    now.setdefault("level", config.level)
    now.setdefault("target_level", levels(config).target)
    diffs = ", ".join(f"--{k}={trained.get(k)} (now {now.get(k)})"
                      for k in dict.fromkeys([*trained, *now])
                      if trained.get(k) != now.get(k))
    raise SeqjaxError(
        f"--workdir={workdir}: its model was trained with {diffs} "
        f"({data_lib.VOCAB_FILE}); evaluating or training it on other data "
        "could score it on its own training sentences. Use the flags it was "
        "trained with, or another workdir; nothing was changed.")


# Flags that change how a trained model is evaluated or run, not which model
# or data: --eval_only takes the others from the run recorded in --workdir.
EVAL_FLAGS = frozenset({
    "workdir", "eval_only", "translate", "ensemble", "ensemble_members",
    "score", "score_output",
    "n_best", "beam_size",
    "length_penalty", "sampling_temperature", "top_k", "top_p",
    "sampling_seed", "dev_beam_size", "eval_batch_size", "n_examples",
    "n_attention_plots", "log_every", "checkpoint_every",
    "checkpoint_every_secs", "progress", "num_devices", "coordinator_address",
    "num_processes", "process_id", "train_minutes", "skip_nonfinite_updates"})


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


def check_ensemble(config: TranslateConfig) -> None:
  """--eval_only --ensemble: every member must share --workdir's
  vocabularies, decoding and data; stops naming the first that does not,
  before any work (only records are read)."""
  first = translation.load_records(config.workdir)
  for workdir in config.ensemble_workdirs():
    try:
      translation.load_member_records(workdir, first, config.workdir,
                                      same_data=True)
    except ParameterError as e:
      raise flag_error(e) from e


def recorded_settings(workdir: str) -> dict:
  """The flags of the run recorded in ``workdir`` that make its model and
  data: its results.json's, where written, then (overriding them) what the
  checkpoint and vocab.json record. Raises SeqjaxError for a workdir
  without a translation model."""
  try:
    saved, vocabs = translation.load_records(workdir)
  except translation.ModelNotFoundError as e:
    raise SeqjaxError(f"--eval_only needs a trained model: {e.problem} in "
                      f"--workdir={e.value}") from e
  except ParameterError as e:
    raise flag_error(e) from e
  from seqjax import runner
  settings = {}
  results = runner.read_results(workdir)
  if results and results.get("task") == TASK.name:
    settings.update(results.get("flags") or {})
  spec = translation.ModelSpec.from_model_config(saved)
  # Training-only settings: the record does not keep them.
  settings.update({k: v for k, v in spec_flags(spec).items()
                   if k not in ("dropout", "label_smoothing")})
  settings["optimizer"] = saved["optimizer"]
  data = dict(vocabs.data or data_lib.UNRECORDED_DATA)
  if "num_samples" in data and settings.get("num_samples") is None:
    settings["num_samples"] = data.pop("num_samples")
  data.pop("num_samples", None)  # None in results.json: the split's default
  settings.update(data)
  fields = {f.name for f in dataclasses.fields(TranslateConfig)}
  return {k: v for k, v in settings.items()
          if k in fields and k not in EVAL_FLAGS}


def recorded_config(config: TranslateConfig, explicit: set[str]
                    ) -> TranslateConfig:
  """--eval_only: ``config`` with the recorded model and data flags of its
  workdir's run; an ``explicit`` flag that differs from its record stops
  the run, naming each such flag with both values."""
  recorded = recorded_settings(config.workdir)
  conflicts = [f"--{k}={getattr(config, k)} (recorded: {v})"
               for k, v in recorded.items()
               if k in explicit and getattr(config, k) != v]
  if conflicts:
    raise SeqjaxError(
        f"--eval_only: --workdir={config.workdir} holds a model trained with "
        f"other settings: {', '.join(conflicts)}. Leave those flags out (they "
        "are read from the workdir); nothing was changed.")
  return dataclasses.replace(config, **recorded)


def num_samples(config: TranslateConfig) -> int:
  """--num_samples, or its default for the split (0: all)."""
  if config.num_samples is None:
    return NUM_SAMPLES[config.split]
  return config.num_samples


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


def flag_error(e: ParameterError) -> ParameterError:
  """A library call's bad parameter, named by its flag."""
  return e.renamed("--" + FLAG_OF.get(e.param, e.param))


def model_spec(config: TranslateConfig) -> translation.ModelSpec:
  """The model the flags make: each setting from its flag."""
  settings = ModelSettings(**{
      f.name: getattr(config, FLAG_OF.get(f.name, f.name))
      for f in dataclasses.fields(ModelSettings)})
  return translation.ModelSpec(settings=settings, **{
      f.name: getattr(config, f.name)
      for f in dataclasses.fields(translation.ModelSpec)
      if f.name != "settings"})


def spec_flags(spec: translation.ModelSpec) -> dict:
  """``model_spec``'s inverse: the flags (name: value) that make ``spec``."""
  flags = {FLAG_OF.get(k, k): v
           for k, v in dataclasses.asdict(spec.settings).items()}
  flags.update({f.name: getattr(spec, f.name)
                for f in dataclasses.fields(spec) if f.name != "settings"})
  return flags


def prepare_data(config: TranslateConfig,
                 restored: Optional[data_lib.VocabFile] = None
                 ) -> data_lib.TranslationData:
  """The task's data pipeline (``seqjax.data.translation.prepare``) with
  these flags; with ``restored``, a trained model's vocabularies and
  decoding bound."""
  vocabs = (restored.source, restored.target) if restored else None
  max_decode_len = (restored.max_decode_len if restored
                    else config.max_decode_len)
  try:
    return data_lib.prepare(
        resolve_data_path(config.data_path), num_samples=num_samples(config),
        validation_split=config.validation_split, strict=config.strict,
        level=levels(config), batch_size=config.batch_size,
        num_buckets=config.num_buckets, bucket_by=config.bucket_by,
        target_cost=functools.partial(data_lib.target_step_cost, config.cell,
                                      config.latent_dim),
        max_decode_len=max_decode_len, vocabs=vocabs, split=config.split,
        split_seed=config.split_seed, num_test=config.num_test,
        num_dev=config.num_dev, target_script=config.target_script)
  except ParameterError as e:
    raise flag_error(e) from e


def print_held_out(config, held_out: evaluate.HeldOut, hypotheses,
                   losses, scores) -> list[dict]:
  """Prints ``--n_examples`` translations of ``held_out`` with their
  references; -> the examples ("reference": the first, "references": all
  where there are more)."""
  del losses, scores  # printed by print_scores
  examples = []
  if config.n_examples:
    for i in np.linspace(0, len(hypotheses) - 1,
                         min(config.n_examples, len(hypotheses))).astype(int):
      src, refs = held_out.sources[i], held_out.references[i]
      example = {"input": src, "decoded": hypotheses[i], "reference": refs[0]}
      if len(refs) > 1:
        example["references"] = refs
      examples.append(example)
      print(f"-\nInput sentence: {src}\nDecoded sentence: {hypotheses[i]}\n"
            f"Reference{'s' if len(refs) > 1 else ''}: {' | '.join(refs)}")
  return examples


def print_scores(held_out: evaluate.HeldOut, losses, scores) -> None:
  """One line of a held-out set's loss and scores (and, where computed,
  those in simplified script)."""
  simplified = (f" (simplified: BLEU {scores['bleu_simplified']:.2f}, chrF "
                f"{scores['chrf_simplified']:.2f})"
                if "chrf_simplified" in scores else "")
  what = (f"{len(held_out.sources)} pairs" if held_out.name == "val" else
          f"{held_out.name}: {len(held_out.sources)} sentences, "
          f"{held_out.n_references} references")
  print(f"Held out ({what}): loss {losses['loss']:.4f}, token accuracy "
        f"{losses['token_accuracy'] * 100:.2f}%, exact match "
        f"{scores['exact_match'] * 100:.2f}%, BLEU {scores['bleu']:.2f}, "
        f"chrF {scores['chrf']:.2f}{simplified}")


def load_model(config: TranslateConfig, flag: str
               ) -> translation.Translator:
  """The model in --workdir (ensembled with --ensemble's for --translate),
  for ``flag`` (--translate, --score)."""
  settings = (config.search(), config.n_best if config.n_best > 1 else 0,
              config.decoding_key())
  members = config.ensemble_workdirs()
  try:
    return (translation.load_ensemble([config.workdir, *members], *settings)
            if members else
            translation.load_translator(config.workdir, *settings))
  except translation.ModelNotFoundError as e:
    raise SeqjaxError(f"{flag} needs a trained model: {e.problem} in "
                      f"--{e.param}={e.value}") from e
  except ParameterError as e:
    raise flag_error(e) from e


def score_pairs(config: TranslateConfig, out=None) -> dict:
  """--score: each pair of the file's log-probability under the model in
  --workdir, one JSON line a pair (its line number, the pair, log_prob,
  tokens, token_log_probs, unknown, truncated) to --score_output or
  ``out`` (default standard output); notes go to standard error. A bad
  line stops the run before the model is read."""
  try:
    pairs = translation.read_scored_pairs(config.score)
  except ParameterError as e:
    raise flag_error(e) from e
  translator = load_model(config, "--score")
  try:
    scored = translator.score(pairs, config.eval_batch_size)
  except ParameterError as e:
    raise SeqjaxError(f"--score={config.score}: {e.problem}") from e
  try:
    with (open(config.score_output, "w", encoding="utf-8")
          if config.score_output else contextlib.nullcontext(
              out or sys.stdout)) as f:
      for n, s in enumerate(scored, start=1):
        f.write(json.dumps({"line": n, **s.to_dict()}, ensure_ascii=False)
                + "\n")
  except (OSError, ValueError) as e:
    raise SeqjaxError(f"--score_output={config.score_output}: cannot be "
                      f"written: {e}") from e
  total = sum(s.log_prob for s in scored)
  print(f"Scored {len(scored)} pairs of {config.score} with the checkpoint "
        f"at step {translator.step}: total log-probability {total:.4f}",
        file=sys.stderr)
  return {"scored": len(scored), "log_prob": total}


def translate_sentences(config: TranslateConfig) -> dict:
  """--translate: the model in --workdir translates the given sentences."""
  translator = load_model(config, "--translate")
  members = config.ensemble_workdirs()
  if config.translate == ["-"]:
    return translate_stream(translator, sys.stdin, sys.stdout, sys.stderr)
  print(f"Resumed from the checkpoint at step {translator.step} in "
        f"{config.workdir}" + (f", ensembled with {', '.join(members)}"
                               if members else "") + ".")
  width = translator.vocabs.max_source_len
  out = []
  for t in translator.translate(config.translate):
    if t.truncated:
      logging.warning("--translate: truncated to %d %ss, the longest "
                      "training source; dropped %r", width,
                      translator.vocabs.source.level, t.dropped)
    print(f"-\nInput sentence: {t.input}\nDecoded sentence: {t.decoded}")
    for n, (text, score) in enumerate(t.n_best or [], start=1):
      print(f"  {n}. {score:9.4f}  {text}")
    for note in translation_notes(t, translator.vocabs):
      print(note)
    out.append({"input": t.input, "decoded": t.decoded, "unknown": t.unknown,
                "truncated": t.truncated,
                **({"n_best": t.n_best} if t.n_best else {})})
  return {"translations": out, "decoder": config.describe_search(),
          **({"ensemble": [config.workdir, *members]} if members else {})}


def translation_notes(t: translation.Translation, vocabs) -> list[str]:
  """The notes printed under a translation: what was truncated, which
  symbols were unknown."""
  notes = []
  if t.truncated:
    notes.append(f"(truncated to the first {vocabs.max_source_len} "
                 f"{vocabs.source.level}s, the longest training source; "
                 f"dropped {t.dropped!r})")
  if t.unknown:
    notes.append(f"(translated with the unknown symbol in place of "
                 f"{', '.join(repr(u) for u in dict.fromkeys(t.unknown))}: "
                 "not in the training vocabulary)")
  return notes


def translate_stream(translator, lines, out, err=None) -> dict:
  """--translate=-: one translation a line of ``lines``, written (and
  flushed) to ``out`` as each is decoded; a blank line gives a blank line.
  The notes of a line (truncated, unknown symbols) go to ``err``, named by
  its line number, so ``out`` holds the translations alone. Every line is
  padded to the longest training source: one compiled shape."""
  width = translator.vocabs.max_source_len or 0
  count = 0
  for line in lines:
    sentence = line.rstrip("\r\n")
    count += 1
    text = ""
    if sentence.strip():
      t = translator.translate([sentence], width=width or None)[0]
      text = t.decoded
      for note in translation_notes(t, translator.vocabs) if err else ():
        err.write(f"line {count}: {note}\n")
    out.write(text + "\n")
    out.flush()
  return {"translated_lines": count}


TASK = task_lib.register(TranslateTask())
run = TASK.run

if __name__ == "__main__":
  from experiments import common
  common.main(TASK)
