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

from seqjax import ensembles
from seqjax import task as task_lib
from seqjax import translate_eval
from seqjax import translate_inference
from seqjax import translate_runs
from seqjax.errors import ParameterError
from seqjax.translate_config import TranslateConfig
# Also called from here by the binary's users (tests, benchmarks).
from seqjax.translate_inference import score_pairs, translate_stream  # pylint: disable=unused-import
from seqjax.translate_runs import (ENV_VAR, levels, model_spec,  # pylint: disable=unused-import
                                   num_samples, prepare_data,
                                   recorded_config, resolve_data_path)


class TranslateTask(task_lib.Task):
  name = "translate"
  config_cls = TranslateConfig
  metric = "val_chrf"
  size_flags = ("latent_dim", "embedding_dim")

  def metric_for(self, config: TranslateConfig) -> str:
    # A sweep selects: on dev with the random split, never on test.
    return "dev_chrf" if config.split == "random" else self.metric

  def run(self, config: TranslateConfig) -> dict:
    try:
      return self._run(config)
    except ParameterError as e:
      raise flag_error(e) from e

  def _run(self, config: TranslateConfig) -> dict:
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


def flag_error(e: ParameterError) -> ParameterError:
  """A library error named by its flag (``path`` -> ``--data_path``)."""
  from experiments import common
  return common.flag_error(e, translate_runs.FLAG_OF)


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
