"""Run configs: dataclasses whose fields are a binary's flags.

A field declares its bounds and choices (``field(128, "Units.", low=1,
high=MAX_UNITS)``); ``validate()`` turns the declarations into messages that
name the flag, so no task writes "must be positive" by hand. Checks across
fields stay code, in a subclass's ``validate()`` (call ``super()`` first).

``validate()`` is pure: it reads the config and nothing else. Checks that need
the devices (``device_errors()``) start a JAX backend, so the runner makes
them separately, just before the work.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp

from seqjax import decoding
from seqjax import limits
from seqjax import progress as progress_lib
from seqjax import train as train_lib

CELLS = ("lstm", "gru")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def field(default, help: str, *, low=None, high=None, above=None,  # pylint: disable=redefined-builtin
          below=None, choices: Optional[Sequence[Any]] = None, **kwargs):
  """A config field: its flag's default and help text, and what it accepts:
  ``low`` <= value <= ``high``, ``above`` < value < ``below``, value in
  ``choices``. An unset optional field (None) is always accepted."""
  metadata = {"help": help, "low": low, "high": high, "above": above,
              "below": below,
              "choices": tuple(choices) if choices is not None else None}
  return dataclasses.field(default=default, metadata=metadata, **kwargs)


def cell_field():
  """The recurrent cell's field, the same in every task."""
  return field("lstm", "Recurrent cell: lstm or gru.", choices=CELLS)


def field_errors(name: str, value, meta) -> list[str]:
  """The messages of one field's declarations (empty: it is accepted)."""
  if value is None:
    return []
  if meta.get("choices") is not None and value not in meta["choices"]:
    return [f"--{name} must be one of {', '.join(map(str, meta['choices']))};"
            f" got {value!r}"]
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return []
  if isinstance(value, float) and not math.isfinite(value):
    return [f"--{name} must be a finite number; got {value}"]
  low, high, above = meta.get("low"), meta.get("high"), meta.get("above")
  below = meta.get("below")
  if above is not None and below is not None and not above < value < below:
    return [f"--{name} must be in ({above}, {below}); got {value}"]
  if above is not None and not value > above:
    return [f"--{name} must be {'positive' if above == 0 else f'> {above}'};"
            f" got {value}"]
  if low is not None and value < low:
    return [f"--{name} must be {'positive' if low == 1 else f'>= {low}'}; "
            f"got {value}"]
  if below is not None and not value < below:
    return [f"--{name} must be < {below}; got {value}"]
  if high is not None and value > high:
    return [f"--{name} must be <= {high:,}; got {value:,}"]
  return []


def declared_errors(config) -> list[str]:
  """Every field's declaration checked, in field order."""
  return [e for f in dataclasses.fields(config)
          for e in field_errors(f.name, getattr(config, f.name), f.metadata)]


@dataclasses.dataclass
class Config:
  """A config whose fields declare what they accept."""

  def validate(self) -> list[str]:
    """Messages naming each bad flag; empty when the config can run."""
    return declared_errors(self)


@dataclasses.dataclass
class TrainingConfig(Config):
  """Flags every training task has."""

  workdir: str = field("", "Where checkpoints, metrics.jsonl and results.json "
                       "go. Rerunning with the same workdir resumes. Empty: "
                       "runs/<task>-<timestamp>.")
  seed: int = field(0, "Seed of data, initialisation and shuffling.", low=0,
                    high=limits.MAX_SEED)
  epochs: int = field(1, "Passes over the training set.", low=1,
                      high=limits.INT32_MAX)
  batch_size: int = field(32, "Training batch size.", low=1,
                          high=limits.MAX_BATCH)
  optimizer: str = field("adam", "adam, rmsprop or sgd.",
                         choices=train_lib.OPTIMIZERS)
  learning_rate: Optional[float] = field(
      None, "Learning rate; default: Keras' default for the optimizer.",
      above=0)
  eval_only: bool = field(False, "Restore the latest checkpoint from "
                          "--workdir and evaluate, without training.")
  steps_per_call: int = field(25, "Train steps run per jitted call (a scan "
                              "over batches already on the device).", low=1,
                              high=limits.MAX_STEPS_PER_CALL)
  log_every: int = field(500, "Log training metrics every this many steps.",
                         low=0, high=limits.INT32_MAX)
  log_every_seconds: float = field(
      30.0, "Also log a line (steps/s, loss, ETA) when this many seconds "
      "have passed since the last (0: off).", low=0, high=10**9)
  checkpoint_every: int = field(0, "Save a checkpoint every this many steps "
                                "(0: at the end of each epoch).", low=0,
                                high=limits.INT32_MAX)
  num_devices: int = field(0, "Devices the batch is split over (data "
                           "parallel; 0: all devices, of all processes).",
                           low=0)
  dtype: str = field("float32", "Compute dtype: float32 or bfloat16 "
                     "(parameters, optimizer state and loss stay float32).",
                     choices=tuple(DTYPES))
  coordinator_address: str = field("", "Multi-process: host:port of process "
                                   "0's coordinator (jax.distributed).")
  num_processes: int = field(1, "Multi-process: number of processes.", low=1)
  process_id: int = field(0, "Multi-process: this process's index.")
  checkpoint_every_secs: float = field(
      60.0, "Also save a checkpoint when this many seconds have passed since "
      "the last one, so a killed run loses at most about that much (0: off).",
      low=0, high=10**9)
  progress: str = field("auto", "Training progress: bar (a live bar per "
                        "epoch), log (a line per --log_every steps), none; "
                        "auto: bar on a terminal, else log.",
                        choices=progress_lib.MODES)
  skip_nonfinite_updates: bool = field(
      False, "Skip a step whose loss or gradients are not finite (counted in "
      "metrics.jsonl) instead of stopping the run there.")
  keep_best: Optional[bool] = field(
      None, "Keep the checkpoint of the epoch with the best held-out select "
      "metric (the task's, e.g. dev exact match) in <workdir>/best, and "
      "evaluate it at the end (the latest is kept for resuming). Default: on "
      "when the task selects by a metric.")
  keep_best_n: int = field(
      1, "With --keep_best: keep the states of this many best epochs in "
      "<workdir>/best (best.json lists them), e.g. for "
      "`python -m experiments.average --best=N`; the best is evaluated.",
      low=1, high=limits.INT32_MAX)
  patience: int = field(0, "Early stopping: stop after this many epochs in a "
                        "row without a gain in the task's select metric "
                        "(0: off).", low=0, high=limits.INT32_MAX)
  lr_schedule: str = field(
      "constant", "constant; plateau: multiply the learning rate by "
      "--lr_decay_factor after --lr_patience epochs without a gain in the "
      "select metric; warmup_decay: linear warmup over --warmup_steps, then "
      "cosine decay to 0 at the end of --epochs.",
      choices=train_lib.LR_SCHEDULES)
  lr_patience: int = field(2, "--lr_schedule=plateau: epochs without a gain "
                           "before each cut.", low=1, high=limits.INT32_MAX)
  lr_decay_factor: float = field(0.5, "--lr_schedule=plateau: the factor of "
                                 "each cut.", above=0, below=1)
  warmup_steps: int = field(0, "--lr_schedule=warmup_decay: steps of linear "
                            "warmup.", low=0, high=limits.INT32_MAX)
  clip_norm: float = field(0.0, "Clip the gradients to this global norm "
                           "before the optimizer (0: off).", low=0,
                           high=10**9)
  train_minutes: float = field(
      0.0, "A training time budget (this process's, compiles and epoch-end "
      "evaluations included): stop after the last epoch that the previous "
      "epoch's duration, less its compiles, says fits in it; 0: none. "
      "--epochs still bounds.",
      low=0, high=10**7)
  ema_decay: float = field(
      0.0, "Keep an exponential moving average of the parameters with this "
      "decay per step and evaluate it at each epoch end too (its metrics "
      "logged as ema_*); 0: off. Each train call is then one step long. "
      "Saved in every checkpoint (a resume continues it); the model "
      "evaluated at the end and handed back is the average at the selected "
      "step.",
      low=0, below=1)

  def validate(self) -> list[str]:
    errors = super().validate()
    if self.num_processes >= 1 and not (
        0 <= self.process_id < self.num_processes):
      errors.append(f"--process_id={self.process_id} must be in "
                    f"[0, --num_processes={self.num_processes})")
    if self.num_processes > 1 and not self.coordinator_address:
      errors.append("--coordinator_address (host:port of process 0) is needed "
                    f"with --num_processes={self.num_processes}")
    return errors

  def device_errors(self) -> list[str]:
    """The checks that need the devices (they start a JAX backend, which in
    a multi-process run must wait for ``jax.distributed.initialize``)."""
    if self.num_devices < 0 or self.batch_size < 1:
      return []  # validate() names these
    if self.num_processes > 1 and not jax.distributed.is_initialized():
      devices = self.num_devices
    else:
      present = jax.device_count()
      if self.num_devices > present:
        return [f"--num_devices={self.num_devices} but only {present} "
                f"{jax.default_backend()} device(s) are present"]
      devices = self.num_devices or present
    if devices and self.batch_size % devices:
      return [f"--batch_size={self.batch_size} must divide by the {devices} "
              f"devices of --num_devices={self.num_devices} (each device "
              "takes an equal slice of the batch)"]
    return []

  def compute_dtype(self):
    """The dtype models compute in (--dtype)."""
    return DTYPES[self.dtype]

  def fit_config(self) -> train_lib.FitConfig:
    return train_lib.FitConfig(
        batch_size=self.batch_size, epochs=self.epochs, seed=self.seed,
        steps_per_call=self.steps_per_call, log_every_steps=self.log_every,
        log_every_secs=self.log_every_seconds,
        checkpoint_every_steps=self.checkpoint_every,
        checkpoint_every_secs=self.checkpoint_every_secs,
        nonfinite="skip" if self.skip_nonfinite_updates else "stop",
        patience=self.patience, lr_schedule=self.lr_schedule,
        time_budget_secs=60.0 * self.train_minutes,
        ema_decay=self.ema_decay,
        lr_patience=self.lr_patience, lr_decay_factor=self.lr_decay_factor,
        progress=progress_lib.resolve_mode(self.progress, sys.stdout),
        log_learning_rate=(self.learning_rate if self.learning_rate is not
                           None else train_lib.DEFAULT_LEARNING_RATES.get(
                               self.optimizer)))


@dataclasses.dataclass
class DecodingConfig(TrainingConfig):
  """Flags of the tasks that decode sequences: greedy, beam search or
  sampling."""

  beam_size: int = field(1, "Beams of the final held-out evaluation (and of "
                         "--translate where the task has it); 1: greedy.",
                         low=1, high=limits.MAX_BATCH)
  length_penalty: float = field(
      0.0, "Beam search's GNMT length penalty alpha: a hypothesis scores "
      "log P / ((5 + length) / 6) ** alpha, its length counting the end "
      "symbol; 0: the raw log-probability. Greedy decoding has none.",
      low=0, high=100)
  sampling_temperature: float = field(
      0.0, "Sample the final evaluation's tokens (and --translate's where "
      "the task has it) from the softmax of logits / this temperature; 0: "
      "no sampling (--beam_size decides).", low=0, high=1e6)
  top_k: int = field(0, "Sampling: draw among the K most likely tokens "
                     "only; 0: all.", low=0, high=limits.INT32_MAX)
  top_p: float = field(1.0, "Sampling (after --top_k): draw among the "
                       "smallest most likely set of tokens of probability "
                       ">= P only (nucleus sampling); 1: all.", above=0,
                       high=1)
  sampling_seed: Optional[int] = field(
      None, "Seed of the sampled tokens (the same seed, the same text); "
      "default: --seed.", low=0, high=limits.MAX_SEED)

  def target_vocab(self) -> Optional[int]:
    """The target vocabulary's size where the flags fix it (None: known
    from the data only)."""
    return None

  def decodes_stepwise(self) -> bool:
    """Whether the model decodes a token at a time (beam search needs it):
    not a task's ``--model=repeat_vector``, which predicts every step at
    once."""
    return getattr(self, "model", "encoder_decoder") == "encoder_decoder"

  def sampling(self) -> bool:
    return self.sampling_temperature > 0

  def search(self):
    """The final evaluation's strategy (``seqjax.decoding``)."""
    if self.sampling():
      return decoding.Sampling(self.sampling_temperature, self.top_k,
                               self.top_p)
    return decoding.search(self.beam_size, self.length_penalty)

  def decoding_key(self):
    """The random key of the final evaluation's sampling (None: greedy or
    beam search draw nothing)."""
    if not self.sampling():
      return None
    seed = self.seed if self.sampling_seed is None else self.sampling_seed
    return jax.random.key(seed)

  def describe_search(self) -> dict:
    """The final evaluation's decoder as results.json records it."""
    described = self.search().describe()
    if self.sampling():
      described["seed"] = (self.seed if self.sampling_seed is None
                           else self.sampling_seed)
    return described

  def beam_errors(self, vocab: Optional[int]) -> list[str]:
    """Beam widths above ``vocab`` target symbols (None: unknown)."""
    return [f"--{name}={value} exceeds the {vocab} target symbols: the "
            "beams beyond them would stay empty"
            for name, value in self.beam_flags().items()
            if vocab is not None and value > vocab]

  def beam_flags(self) -> dict:
    return {"beam_size": self.beam_size}

  def sampling_errors(self) -> list[str]:
    """Sampling flags that contradict the others."""
    if not self.sampling():
      return [f"--{name}={getattr(self, name)} applies to sampling only: "
              "set --sampling_temperature > 0" for name, unset in
              (("top_k", 0), ("top_p", 1.0), ("sampling_seed", None))
              if getattr(self, name) != unset]
    if self.beam_size > 1:
      return [f"--sampling_temperature={self.sampling_temperature} samples; "
              f"--beam_size={self.beam_size} searches: choose one (beam "
              "size 1 to sample)"]
    return []

  def validate(self) -> list[str]:
    errors = super().validate()
    # The target vocabulary comes from flags: out of bounds, it means nothing.
    if not errors:
      errors += self.beam_errors(self.target_vocab())
    errors += self.sampling_errors()
    wide = [f"--{k}={v}" for k, v in self.beam_flags().items() if v > 1]
    if wide and not self.decodes_stepwise():
      errors.append(f"{', '.join(wide)}: beam search needs a model that "
                    "decodes a token at a time, fed its own tokens; this one "
                    "predicts otherwise (use 1: its own decoding)")
    return errors


@dataclasses.dataclass
class DevDecodingConfig(DecodingConfig):
  """Decoding flags of a task that also decodes its dev set every epoch."""

  dev_beam_size: int = field(1, "Beams of the dev decoding after every "
                             "epoch (model selection); 1: greedy, the "
                             "fastest. --length_penalty applies.", low=1,
                             high=limits.MAX_BATCH)

  def dev_search(self):
    """The every-epoch dev decoding's strategy: greedy or beam search (a
    model is selected on deterministic outputs)."""
    return decoding.search(self.dev_beam_size, self.length_penalty)

  def beam_flags(self) -> dict:
    return {"beam_size": self.beam_size, "dev_beam_size": self.dev_beam_size}
