"""Keras' ``addition_rnn`` example: learn to add, "535+61" -> "596".

Distinct questions with up to ``--digits`` digits per operand, padded (and with
``--reverse``, reversed); 10% are held out, as in Keras, and split in two
halves: dev and test. ``--model=repeat_vector`` (the example's model: LSTM
encoder, RepeatVector, LSTM decoder, TimeDistributed Dense) or
``--model=encoder_decoder`` (teacher forcing, greedy decoding, or beam
search: ``--beam_size`` at the end, ``--dev_beam_size`` every epoch). After
each epoch the dev exact-match accuracy and a few dev examples are printed; the
epoch with the best dev exact match is kept (``--keep_best``) and is the
model handed back, scored once on the test questions at the end (training
never looks at them). ``<workdir>/results.json`` gets ``test_exact_match``,
the dev numbers of the selected epoch and the per-epoch history of this run.

  python -m experiments.addition [--model=encoder_decoder --digits=3 ...]
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from seqjax import config as config_lib
from seqjax import decoding
from seqjax import limits
from seqjax import metrics
from seqjax import models
from seqjax import task as task_lib
from seqjax import train as train_lib
from seqjax.config import field
from seqjax.data import addition as addition_data

HELD_OUT_FRACTION = 10   # 1 / 10 of the questions are held out, as in Keras
# ... the first half of them dev (selection), the rest test (the result).
MIN_TRAINING_SIZE = 2 * HELD_OUT_FRACTION


@dataclasses.dataclass
class AdditionConfig(config_lib.DevDecodingConfig):
  epochs: int = field(30, "Passes over the training set.", low=1,
                      high=limits.INT32_MAX)
  model: str = field("repeat_vector", "repeat_vector (the Keras example) or "
                     "encoder_decoder (teacher forcing + greedy decoding).",
                     choices=models.MODEL_CHOICES)
  digits: int = field(3, "Maximum digits of each operand.", low=1,
                      high=addition_data.MAX_DIGITS)
  reverse: bool = field(True, "Feed the question reversed (' 16+535').")
  training_size: int = field(50_000, "Distinct questions generated; 10% of "
                             "them are held out: half dev, half test.",
                             low=MIN_TRAINING_SIZE)
  hidden_size: int = field(128, "Recurrent units of encoder and decoder.",
                           low=1, high=limits.MAX_UNITS)
  cell: str = config_lib.cell_field()
  n_examples: int = field(10, "Dev examples printed after each epoch.",
                          low=0, high=limits.MAX_EXAMPLES)
  target_accuracy: float = field(0.99, "results.json records the first epoch "
                                 "whose dev exact match reaches this.",
                                 above=0, high=1)

  def target_vocab(self) -> int:
    return addition_data.TARGET_VOCAB

  def validate(self):
    return super().validate() or self.size_errors()

  def size_errors(self) -> list[str]:
    """The sizes that do not fit together: questions, training split,
    batch."""
    errors = []
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
  def n_held_out(self) -> int:
    return self.training_size // HELD_OUT_FRACTION

  @property
  def n_dev(self) -> int:
    return self.n_held_out // 2

  @property
  def n_test(self) -> int:
    return self.n_held_out - self.n_dev

  @property
  def n_train(self) -> int:
    return self.training_size - self.n_held_out

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
  # Runs are ranked by the dev number (what selection saw); the test
  # number is the reported result.
  metric = "dev_exact_match"
  size_flags = ("hidden_size",)

  def setup(self, config: AdditionConfig, workdir: str) -> task_lib.Setup:
    data = addition_data.generate(
        np.random.default_rng([config.seed, 0]), config.training_size,
        config.digits, config.reverse)
    train, dev, test = split(data, config.n_dev, config.n_test)
    n_chars = addition_data.VOCAB
    print(f"Training data: x {train['src'].shape + (n_chars,)} y "
          f"{train['target'].shape + (n_chars,)}; held out: dev "
          f"{len(dev['src'])}, test {len(test['src'])} questions (one-hot "
          "shapes; stored as int32 ids)")
    model = build_model(config)
    inputs = models.init_inputs(model, train)
    keys = ("src", "dec_in", "target") if len(inputs) == 2 else ("src",
                                                                 "target")
    held_out = HeldOut(config, model, train, dev, test)
    return task_lib.Setup(
        model=model, init_inputs=inputs, train={k: train[k] for k in keys},
        loss_fn=train_lib.make_seq2seq_loss(model),
        model_config=config.model_config(),
        title=f"{config.model} ({config.cell})", epoch_end=held_out.epoch_end,
        select_metric="dev_exact_match", data=held_out)

  def evaluate(self, config: AdditionConfig, setup, state) -> dict:
    """The handed-back model (the selected epoch's): dev numbers (from the
    history when this run evaluated it), then the test questions, once."""
    held_out = setup.data
    history, step = held_out.history, int(state.step)
    seen = [h for h in history if h["step"] == step]
    if seen and config.search() == config.dev_search():
      dev, dev_tokens = seen[-1]["dev_exact_match"], seen[-1][
          "dev_token_accuracy"]
    else:  # not evaluated yet (restored, --eval_only), or by another search
      dev, dev_tokens = held_out.evaluate(state.params, "dev", step,
                                          f"Step {step}", final=True)
    test, test_tokens = held_out.evaluate(state.params, "test", step,
                                          f"Step {step}", examples=False,
                                          final=True)
    train_accuracy = float(metrics.exact_sequence_accuracy(
        held_out.predict(state.params, held_out.splits["train"]["src"]),
        held_out.splits["train"]["target"]))
    print(f"Test exact match: {test * 100:.2f}% (dev {dev * 100:.2f}%, "
          f"training questions {train_accuracy * 100:.2f}%; step {step})")
    reached = [h for h in history
               if h["dev_exact_match"] >= config.target_accuracy]
    return {"model": config.model, "test_exact_match": test,
            "test_token_accuracy": test_tokens, "dev_exact_match": dev,
            "dev_token_accuracy": dev_tokens,
            "train_accuracy": train_accuracy, "n_train": config.n_train,
            "n_dev": config.n_dev, "n_test": config.n_test,
            "decoder": config.describe_search(),
            "dev_decoder": config.dev_search().describe(),
            "history": history,
            "first_epoch_at_target": reached[0]["epoch"] if reached else None,
            "seconds_to_target": reached[0]["wall_s"] if reached else None}


class HeldOut:
  """The held-out questions: dev exact match after each epoch, with
  examples (``history``: one row per epoch trained by this run); the test
  questions only when ``evaluate`` is asked for them (at the end)."""

  def __init__(self, config: AdditionConfig, model, train: dict, dev: dict,
               test: dict):
    self.config = config
    self.splits = {"train": train, "dev": dev, "test": test}
    make = lambda strategy: decoding.make_decoder(
        model, strategy, max_len=addition_data.answer_len(config.digits),
        start_id=addition_data.START_ID)
    # Every epoch's dev decoding, and the final evaluation's (the same
    # compiled decoder when the searches are the same).
    self.predictors = {False: make(config.dev_search())}
    self.predictors[True] = (self.predictors[False] if config.search() ==
                             config.dev_search() else make(config.search()))
    # One batch size for every split: one compile.
    self.batch = min(config.n_dev, 1000)
    self.history = []
    self.t_start = time.perf_counter()

  def predict(self, params, src, final: bool = False):
    key = self.config.decoding_key() if final else None
    return decoding.decode_in_batches(self.predictors[final], params, src,
                                      batch_size=self.batch, key=key)

  def evaluate(self, params, split: str, step: int, label: str,
               examples: bool = True, final: bool = False
               ) -> tuple[float, float]:
    """-> (exact match, character accuracy) on ``split``, printed; decoded
    by the final evaluation's search (``final``) or the dev one's."""
    questions = self.splits[split]
    pred = self.predict(params, questions["src"], final)
    accuracy = float(metrics.exact_sequence_accuracy(pred,
                                                     questions["target"]))
    token_accuracy = float(metrics.masked_token_accuracy(pred,
                                                         questions["target"]))
    print(f"{label}: {split} exact match {accuracy * 100:.2f}% "
          f"(characters {token_accuracy * 100:.2f}%, {len(pred)} questions)")
    if examples:
      self.show_examples(questions, pred, step)
    return accuracy, token_accuracy

  def show_examples(self, questions: dict, pred, step: int) -> None:
    texts = addition_data.question_strings(
        questions["a"], questions["b"], self.config.digits, reverse=False)
    answers = addition_data.decode(questions["target"])
    guesses = addition_data.decode(pred)
    rng = np.random.default_rng([self.config.seed, 2, step])
    shown = rng.choice(len(pred), min(self.config.n_examples, len(pred)),
                       replace=False)
    for i in shown:
      mark = "☑" if guesses[i] == answers[i] else "☒"
      print(f"Q {texts[i]} T {answers[i]} {mark} {guesses[i]}")

  def epoch_end(self, state, epoch: int) -> dict:
    accuracy, token_accuracy = self.evaluate(
        state.params, "dev", int(state.step), f"Epoch {epoch}")
    self.history.append({"epoch": epoch, "step": int(state.step),
                         "dev_exact_match": accuracy,
                         "dev_token_accuracy": token_accuracy,
                         "wall_s": time.perf_counter() - self.t_start})
    return {"dev_exact_match": accuracy, "dev_token_accuracy": token_accuracy}


def build_model(config: AdditionConfig):
  teacher_forced = config.model == "encoder_decoder"
  return models.build_seq2seq(
      config.model, src_vocab=addition_data.VOCAB,
      # Only the teacher-forced decoder reads the start token.
      tgt_vocab=(addition_data.TARGET_VOCAB if teacher_forced
                 else addition_data.VOCAB),
      units=config.hidden_size,
      out_len=addition_data.answer_len(config.digits), cell=config.cell)


def split(data: dict, n_dev: int, n_test: int) -> tuple[dict, dict, dict]:
  """-> (train, dev, test): the last ``n_dev + n_test`` questions are held
  out, dev first (the order is already random; the questions are distinct,
  so the three share none)."""
  cut, mid = len(data["src"]) - n_dev - n_test, len(data["src"]) - n_test
  return ({k: v[:cut] for k, v in data.items()},
          {k: v[cut:mid] for k, v in data.items()},
          {k: v[mid:] for k, v in data.items()})


TASK = task_lib.register(AdditionTask())
run = TASK.run

if __name__ == "__main__":
  from experiments import common
  common.main(TASK)
