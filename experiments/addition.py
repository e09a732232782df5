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

import numpy as np

from seqjax import config as config_lib
from seqjax import decode as decode_lib
from seqjax import limits
from seqjax import metrics
from seqjax import models
from seqjax import task as task_lib
from seqjax import train as train_lib
from seqjax.config import field
from seqjax.data import addition as addition_data

HELD_OUT_FRACTION = 10   # 1 / 10 of the questions are held out, as in Keras


@dataclasses.dataclass
class AdditionConfig(config_lib.TrainingConfig):
  epochs: int = field(30, "Passes over the training set.", low=1,
                      high=limits.INT32_MAX)
  model: str = field("repeat_vector", "repeat_vector (the Keras example) or "
                     "encoder_decoder (teacher forcing + greedy decoding).",
                     choices=models.MODEL_CHOICES)
  digits: int = field(3, "Maximum digits of each operand.", low=1,
                      high=addition_data.MAX_DIGITS)
  reverse: bool = field(True, "Feed the question reversed (' 16+535').")
  training_size: int = field(50_000, "Distinct questions generated; 10% of "
                             "them are held out.", low=HELD_OUT_FRACTION)
  hidden_size: int = field(128, "Recurrent units of encoder and decoder.",
                           low=1, high=limits.MAX_UNITS)
  cell: str = field("lstm", "Recurrent cell: lstm or gru.",
                    choices=config_lib.CELLS)
  n_examples: int = field(10, "Held-out examples printed after each epoch.",
                          low=0, high=limits.MAX_EXAMPLES)
  target_accuracy: float = field(0.99, "results.json records the first epoch "
                                 "whose held-out exact match reaches this.",
                                 above=0, high=1)

  def validate(self):
    errors = super().validate()
    if errors:
      return errors
    distinct = addition_data.num_distinct_questions(self.digits)
    if self.training_size > distinct:
      errors.append(f"--training_size={self.training_size} exceeds the "
                    f"{distinct:,} distinct questions with --digits="
                    f"{self.digits}")
    elif 2 * self.training_size > distinct > addition_data.MAX_ENUMERATED:
      errors.append(
          f"--training_size={self.training_size}: more than half of the "
          f"distinct questions with --digits={self.digits} is not supported")
    elif self.batch_size > self.n_train:
      errors.append(f"--batch_size={self.batch_size} exceeds the {self.n_train}"
                    f" training questions (--training_size minus 10%)")
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
    return {"task": "addition", "model": self.model, "cell": self.cell,
            "hidden_size": self.hidden_size, "digits": self.digits,
            "reverse": self.reverse, "training_size": self.training_size,
            "seed": self.seed}


class AdditionTask(task_lib.Task):
  name = "addition"
  config_cls = AdditionConfig
  metric = "val_accuracy"
  size_flags = ("hidden_size",)

  def setup(self, config: AdditionConfig, workdir: str) -> task_lib.Setup:
    data = addition_data.generate(
        np.random.default_rng([config.seed, 0]), config.training_size,
        config.digits, config.reverse)
    train, val = split(data, config.n_val)
    n_chars = addition_data.VOCAB
    print(f"Training data: x {train['src'].shape + (n_chars,)} y "
          f"{train['target'].shape + (n_chars,)}; held out: x "
          f"{val['src'].shape + (n_chars,)} (one-hot shapes; stored as int32 "
          "ids)")
    model = build_model(config)
    inputs = models.init_inputs(model, train)
    keys = ("src", "dec_in", "target") if len(inputs) == 2 else ("src",
                                                                 "target")
    held_out = HeldOut(config, model, train, val)
    return task_lib.Setup(
        model=model, init_inputs=inputs, train={k: train[k] for k in keys},
        loss_fn=train_lib.make_seq2seq_loss(model),
        model_config=config.model_config(),
        title=f"{config.model} ({config.cell})", epoch_end=held_out.epoch_end,
        data=held_out)

  def evaluate(self, config: AdditionConfig, setup, state) -> dict:
    held_out = setup.data
    history = held_out.history
    if history and history[-1]["step"] == int(state.step):
      accuracy = history[-1]["val_accuracy"]
      token_accuracy = history[-1]["val_token_accuracy"]
    else:  # restored (or --eval_only): this state was not evaluated yet
      accuracy, token_accuracy = held_out.evaluate(
          state.params, int(state.step), f"Step {int(state.step)}")
    train_accuracy = float(metrics.exact_sequence_accuracy(
        held_out.predict(state.params, held_out.train["src"]),
        held_out.train["target"]))
    print(f"Held-out exact match: {accuracy * 100:.2f}%; training questions: "
          f"{train_accuracy * 100:.2f}%")
    reached = [h for h in history
               if h["val_accuracy"] >= config.target_accuracy]
    return {"model": config.model, "val_accuracy": accuracy,
            "val_token_accuracy": token_accuracy,
            "train_accuracy": train_accuracy, "n_train": config.n_train,
            "n_val": config.n_val, "history": history,
            "first_epoch_at_target": reached[0]["epoch"] if reached else None,
            "seconds_to_target": reached[0]["wall_s"] if reached else None}


class HeldOut:
  """The held-out questions: exact match after each epoch, with examples;
  ``history`` has one row per epoch trained by this run."""

  def __init__(self, config: AdditionConfig, model, train: dict, val: dict):
    self.config, self.train, self.val = config, train, val
    self.predictor = decode_lib.make_token_predictor(
        model, max_len=addition_data.answer_len(config.digits),
        start_id=addition_data.START_ID)
    # One batch size for held-out and training questions: one compile.
    self.batch = min(config.n_val, 1000)
    self.questions = addition_data.question_strings(
        val["a"], val["b"], config.digits, reverse=False)
    self.answers = addition_data.decode(val["target"])
    self.history = []
    self.t_start = time.perf_counter()

  def predict(self, params, src):
    return decode_lib.decode_in_batches(self.predictor, params, src,
                                        batch_size=self.batch)

  def evaluate(self, params, step: int, label: str) -> tuple[float, float]:
    pred = self.predict(params, self.val["src"])
    accuracy = float(metrics.exact_sequence_accuracy(pred, self.val["target"]))
    token_accuracy = float(metrics.masked_token_accuracy(pred,
                                                         self.val["target"]))
    print(f"{label}: held-out exact match {accuracy * 100:.2f}% "
          f"(characters {token_accuracy * 100:.2f}%, {len(pred)} questions)")
    guesses = addition_data.decode(pred)
    rng = np.random.default_rng([self.config.seed, 2, step])
    shown = rng.choice(len(pred), min(self.config.n_examples, len(pred)),
                       replace=False)
    for i in shown:
      mark = "☑" if guesses[i] == self.answers[i] else "☒"
      print(f"Q {self.questions[i]} T {self.answers[i]} {mark} {guesses[i]}")
    return accuracy, token_accuracy

  def epoch_end(self, state, epoch: int) -> dict:
    accuracy, token_accuracy = self.evaluate(state.params, int(state.step),
                                             f"Epoch {epoch}")
    self.history.append({"epoch": epoch, "step": int(state.step),
                         "val_accuracy": accuracy,
                         "val_token_accuracy": token_accuracy,
                         "wall_s": time.perf_counter() - self.t_start})
    return {"val_accuracy": accuracy, "val_token_accuracy": token_accuracy}


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


TASK = task_lib.register(AdditionTask())
run = TASK.run

if __name__ == "__main__":
  from experiments import common
  common.main(TASK)
