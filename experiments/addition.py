"""Keras' ``addition_rnn`` example: learn to add, "535+61" -> "596".

Distinct questions with up to ``--digits`` digits per operand, padded (and with
``--reverse``, reversed); 10% are held out. ``--model=repeat_vector`` (the
example's model: LSTM encoder, RepeatVector, LSTM decoder, TimeDistributed
Dense) or ``--model=encoder_decoder`` (teacher forcing, greedy decoding).
After each epoch the held-out exact-match accuracy and a few examples are
printed; ``<workdir>/results.json`` gets the per-epoch history of this run.

  python -m experiments.addition [--model=encoder_decoder --digits=3 ...]
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

from seqjax import decode as decode_lib
from seqjax import experiment
from seqjax import metrics
from seqjax import models
from seqjax import reliability
from seqjax import summary
from seqjax import train as train_lib
from seqjax.data import addition as addition_data
from seqjax.experiment import field

TASK = "addition"
HELD_OUT_FRACTION = 10   # 1 / 10 of the questions are held out, as in Keras


@dataclasses.dataclass
class AdditionConfig(experiment.TrainingConfig):
  epochs: int = field(30, "Passes over the training set.")
  model: str = field("repeat_vector", "repeat_vector (the Keras example) or "
                     "encoder_decoder (teacher forcing + greedy decoding).")
  digits: int = field(3, "Maximum digits of each operand.")
  reverse: bool = field(True, "Feed the question reversed (' 16+535').")
  training_size: int = field(50_000, "Distinct questions generated; 10% of "
                             "them are held out.")
  hidden_size: int = field(128, "Recurrent units of encoder and decoder.")
  cell: str = field("lstm", "Recurrent cell: lstm or gru.")
  n_examples: int = field(10, "Held-out examples printed after each epoch.")
  target_accuracy: float = field(0.99, "results.json records the first epoch "
                                 "whose held-out exact match reaches this.")

  def validate(self):
    errors = super().validate()
    if not 1 <= self.digits <= addition_data.MAX_DIGITS:
      errors.append(f"--digits must lie in 1..{addition_data.MAX_DIGITS}; got "
                    f"{self.digits}")
    elif self.training_size > addition_data.num_distinct_questions(
        self.digits):
      errors.append(
          f"--training_size={self.training_size} exceeds the "
          f"{addition_data.num_distinct_questions(self.digits):,} distinct "
          f"questions with --digits={self.digits}")
    elif (2 * self.training_size >
          addition_data.num_distinct_questions(self.digits) >
          addition_data.MAX_ENUMERATED):
      errors.append(
          f"--training_size={self.training_size}: more than half of the "
          f"distinct questions with --digits={self.digits} is not supported")
    if self.training_size < HELD_OUT_FRACTION:
      errors.append(f"--training_size must be >= {HELD_OUT_FRACTION} (10% is "
                    f"held out); got {self.training_size}")
    elif self.batch_size > self.n_train:
      errors.append(f"--batch_size={self.batch_size} exceeds the {self.n_train}"
                    f" training questions (--training_size minus 10%)")
    if self.hidden_size < 1:
      errors.append(f"--hidden_size must be positive; got {self.hidden_size}")
    if self.model not in models.MODEL_CHOICES:
      errors.append(f"--model must be one of {', '.join(models.MODEL_CHOICES)}"
                    f"; got {self.model!r}")
    if self.cell not in ("lstm", "gru"):
      errors.append(f"--cell must be lstm or gru; got {self.cell!r}")
    if self.n_examples < 0:
      errors.append(f"--n_examples must be >= 0; got {self.n_examples}")
    if not 0 < self.target_accuracy <= 1:
      errors.append(f"--target_accuracy must lie in (0, 1]; got "
                    f"{self.target_accuracy}")
    errors += reliability.range_errors(self, {
        "hidden_size": (None, reliability.MAX_UNITS),
        "n_examples": (None, reliability.MAX_EXAMPLES)})
    u = self.hidden_size
    if 1 <= u <= reliability.MAX_UNITS and 8 * u * (u + 1) > (
        reliability.INT32_MAX):  # the two recurrent kernels alone
      errors.append(f"--hidden_size={u} makes over {8 * u * (u + 1):,} "
                    f"parameters; at most {reliability.INT32_MAX:,}")
    return errors

  @property
  def n_val(self) -> int:
    return self.training_size // HELD_OUT_FRACTION

  @property
  def n_train(self) -> int:
    return self.training_size - self.n_val

  def model_config(self) -> dict:
    """What the checkpoint must match: the model, and the data that decides
    which questions are held out."""
    return {"task": TASK, "model": self.model, "cell": self.cell,
            "hidden_size": self.hidden_size, "digits": self.digits,
            "reverse": self.reverse, "training_size": self.training_size,
            "seed": self.seed}


def build_model(config: AdditionConfig):
  teacher_forced = config.model == "encoder_decoder"
  return models.build_seq2seq(
      config.model, src_vocab=addition_data.VOCAB,
      # Only the teacher-forced decoder reads the start token.
      tgt_vocab=(addition_data.TARGET_VOCAB if teacher_forced
                 else addition_data.VOCAB),
      units=config.hidden_size,
      out_len=addition_data.answer_len(config.digits), cell=config.cell)


def split(data: dict, n_val: int) -> tuple[dict, dict]:
  """The last ``n_val`` questions are held out (the order is already random)."""
  cut = len(data["src"]) - n_val
  return ({k: v[:cut] for k, v in data.items()},
          {k: v[cut:] for k, v in data.items()})


def run(config: AdditionConfig) -> dict:
  experiment.check_config(config)
  workdir = experiment.resolve_workdir(config, TASK)
  data = addition_data.generate(
      np.random.default_rng([config.seed, 0]), config.training_size,
      config.digits, config.reverse)
  train, val = split(data, config.n_val)
  keys = ("src", "target") if config.model == "repeat_vector" else (
      "src", "dec_in", "target")
  train_arrays = {k: train[k] for k in keys}
  n_chars = addition_data.VOCAB
  print(f"Training data: x {train['src'].shape + (n_chars,)} y "
        f"{train['target'].shape + (n_chars,)}; held out: x "
        f"{val['src'].shape + (n_chars,)} (one-hot shapes; stored as int32 ids)")

  model = build_model(config)
  params = jax.jit(lambda key, src, dec_in: models.init_params(
      model, key, src, dec_in))(jax.random.key(config.seed), train["src"][:1],
                                train["dec_in"][:1])
  print(summary.format_summary(params, title=f"{config.model} ({config.cell})"))

  answer_len = addition_data.answer_len(config.digits)
  predictor = decode_lib.make_token_predictor(
      model, max_len=answer_len, start_id=addition_data.START_ID)

  # One batch size for held-out and training questions: one compile.
  eval_batch = min(config.n_val, 1000)

  def predict(params, src):
    return decode_lib.decode_in_batches(predictor, params, src,
                                        batch_size=eval_batch)

  questions = addition_data.question_strings(val["a"], val["b"], config.digits,
                                             reverse=False)
  answers = addition_data.decode(val["target"])
  history = []       # one row per epoch trained by this run
  t_start = time.perf_counter()

  def evaluate(params, step, label):
    pred = predict(params, val["src"])
    accuracy = float(metrics.exact_sequence_accuracy(pred, val["target"]))
    token_accuracy = float(metrics.masked_token_accuracy(pred, val["target"]))
    print(f"{label}: held-out exact match {accuracy * 100:.2f}% "
          f"(characters {token_accuracy * 100:.2f}%, {len(pred)} questions)")
    guesses = addition_data.decode(pred)
    rng = np.random.default_rng([config.seed, 2, step])
    shown = rng.choice(len(pred), min(config.n_examples, len(pred)),
                       replace=False)
    for i in shown:
      mark = "☑" if guesses[i] == answers[i] else "☒"
      print(f"Q {questions[i]} T {answers[i]} {mark} {guesses[i]}")
    return accuracy, token_accuracy

  def epoch_end(state, epoch):
    accuracy, token_accuracy = evaluate(state.params, int(state.step),
                                        f"Epoch {epoch}")
    history.append({"epoch": epoch, "step": int(state.step),
                    "val_accuracy": accuracy,
                    "val_token_accuracy": token_accuracy,
                    "wall_s": time.perf_counter() - t_start})
    return {"val_accuracy": accuracy, "val_token_accuracy": token_accuracy}

  state, stats = experiment.train_or_restore(
      model=model, params=params, config=config, workdir=workdir,
      model_config=config.model_config(), data=train_arrays,
      loss_fn=train_lib.make_seq2seq_loss(model), epoch_end_fn=epoch_end)
  if history and history[-1]["step"] == int(state.step):
    accuracy = history[-1]["val_accuracy"]
    token_accuracy = history[-1]["val_token_accuracy"]
  else:  # restored (or --eval_only): this state was not evaluated yet
    accuracy, token_accuracy = evaluate(state.params, int(state.step),
                                        f"Step {int(state.step)}")
  train_accuracy = float(metrics.exact_sequence_accuracy(
      predict(state.params, train["src"]), train["target"]))
  print(f"Held-out exact match: {accuracy * 100:.2f}%; training questions: "
        f"{train_accuracy * 100:.2f}%")
  reached = [h for h in history if h["val_accuracy"] >= config.target_accuracy]

  results = experiment.base_results(TASK, config)
  results.update(
      workdir=workdir, model=config.model, val_accuracy=accuracy,
      val_token_accuracy=token_accuracy, train_accuracy=train_accuracy,
      n_train=config.n_train, n_val=config.n_val, step=int(state.step),
      history=history,
      first_epoch_at_target=reached[0]["epoch"] if reached else None,
      seconds_to_target=reached[0]["wall_s"] if reached else None,
      **experiment.training_results(stats, config.batch_size, params))
  experiment.write_json_atomic(f"{workdir}/results.json", results)
  print(f"Wrote {workdir}/results.json")
  return results


if __name__ == "__main__":
  from experiments import common
  common.main(AdditionConfig, run)
