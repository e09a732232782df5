"""The echo tutorial: learn to echo random integers with an LSTM.

Sequences of 25 random integers in 0..99 (one-hot over 100 classes in Keras;
token ids here), a fresh draw each, framed by ``seqjax.data.echo``:

* ``--mode=current``: y(t) = X(t), one timestep a sample; LSTM(15) + Dense,
  batch 1, 500 sequences. Learns (100% in the tutorial).
* ``--mode=lag_one_step``: y(t) = X(t-1) from X(t) alone; stateful LSTM(50),
  batch 6, the carry kept across the batches of a sequence and reset after
  it, 2000 sequences. The "beginner's mistake": fails (0-4% in the tutorial).
* ``--mode=lag_window``: y(t) = X(t-1) from the last 5 observations as 5
  timesteps; stateful LSTM(50), batch 5, 2000 sequences. Learns (100%).
* ``--mode=lag_table``: ``lag_window`` for ``--lag`` = 1 .. window-1; writes
  ``lag_table.json`` and ``lag_table.md``.

Extensions: ``--lag=N``, ``--stateful=false`` (reset the carry every batch),
``--mask_missing`` (keep the rows lacking history; missing values masked),
``--whole_sequence`` (X(0..t) as context, padded and masked),
``--sequence_output`` (a prediction at every step: the sample's input,
``lag`` steps later). Flags left unset take the mode's tutorial value.

  python -m experiments.echo --mode=lag_window [--lag=2 --workdir=...]
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import numpy as np

from seqjax import config as config_lib
from seqjax import limits
from seqjax import metrics
from seqjax import runner
from seqjax import stateful as stateful_lib
from seqjax import task as task_lib
from seqjax import train as train_lib
from seqjax.config import field
from seqjax.data import echo as echo_data
from seqjax.models import RecurrentClassifier

MODES = ("current", "lag_one_step", "lag_window", "lag_table")
# The tutorial's settings, for every flag left unset.
MODE_DEFAULTS = {
    "current": dict(lag=0, stateful=False, batch_size=1, n_units=15,
                    n_sequences=500),
    "lag_one_step": dict(lag=1, stateful=True, batch_size=6, n_units=50,
                         n_sequences=2000),
    "lag_window": dict(lag=1, stateful=True, batch_size=5, n_units=50,
                       n_sequences=2000),
    "lag_table": dict(lag=None, stateful=True, batch_size=5, n_units=50,
                      n_sequences=2000),
}

FAILURE_EXPLANATION = (
    "Each sample is the single timestep X(t) and its target X(t-{lag}) is not "
    "in it. The only way back to X(t-{lag}) is the carry, and it is handed "
    "from batch to batch as a constant: no gradient reaches the step that saw "
    "the value, so nothing teaches the LSTM to keep it. Besides, with batch "
    "{batch} row i of a batch continues row i of the previous batch, i.e. the "
    "sample {batch} steps earlier, not the previous one. So the model learns a "
    "function of X(t) only, which says nothing about X(t-{lag}). The fix is "
    "to give the past as timesteps of the input: --mode=lag_window.")


@dataclasses.dataclass
class EchoConfig(config_lib.TrainingConfig):
  mode: str = field("current", "current, lag_one_step, lag_window or "
                    "lag_table.", choices=MODES)
  lag: Optional[int] = field(None, "Echo X(t-lag). Default: 0 for current, "
                             "1 otherwise; lag_window needs lag < --window; "
                             "lag_table trains 1..window-1.", low=0,
                             high=limits.MAX_LENGTH)
  window: int = field(5, "lag_window / lag_table: observations per sample.",
                      low=1, high=limits.MAX_LENGTH)
  stateful: Optional[bool] = field(
      None, "Keep the carry from batch to batch within a sequence (reset "
      "after each); false resets it every batch. Default: false for current, "
      "true otherwise.")
  mask_missing: bool = field(False, "Keep the first rows of each sequence "
                             "(dropped by the tutorial: they lack history); "
                             "missing inputs and targets are masked.")
  whole_sequence: bool = field(False, "lag_window / lag_table: X(0..t) as "
                               "each sample's context, padded to "
                               "--seq_length and masked.")
  sequence_output: bool = field(False, "A prediction at every timestep (the "
                                "sample's input, lag steps later), not only "
                                "the last.")
  seq_length: int = field(25, "Integers per sequence.", low=1,
                          high=limits.MAX_LENGTH)
  n_values: int = field(100, "Values are 0..n_values-1 (the one-hot width).",
                        low=2, high=limits.MAX_VOCAB)
  n_sequences: Optional[int] = field(None, "Training sequences, each a fresh "
                                     "draw. Default: 500 for current, 2000 "
                                     "otherwise.", low=1,
                                     high=limits.MAX_EXAMPLES)
  n_units: Optional[int] = field(None, "Recurrent units. Default: 15 for "
                                 "current, 50 otherwise.", low=1,
                                 high=limits.MAX_UNITS)
  cell: str = config_lib.cell_field()
  n_eval: int = field(100, "Fresh sequences to measure accuracy on.", low=1,
                      high=limits.MAX_EXAMPLES)
  batch_size: Optional[int] = field(None, "Training batch size. Default: 1 "
                                    "for current, 6 for lag_one_step, 5 "
                                    "otherwise.", low=1, high=limits.MAX_BATCH)

  def resolved(self) -> "EchoConfig":
    """This config with every unset flag set to the mode's default."""
    if self.mode not in MODE_DEFAULTS:
      return self
    return dataclasses.replace(self, **{
        k: v for k, v in MODE_DEFAULTS[self.mode].items()
        if getattr(self, k) is None})

  def framing(self, lag: Optional[int] = None) -> echo_data.Framing:
    mode = "lag_window" if self.mode == "lag_table" else self.mode
    lag = self.lag if lag is None else lag
    return echo_data.for_mode(
        mode, window=self.window, lag=lag, mask_missing=self.mask_missing,
        whole_sequence=self.whole_sequence,
        sequence_output=self.sequence_output)

  def validate(self) -> list[str]:
    if self.mode not in MODES:
      return config_lib.declared_errors(self)
    c = self.resolved()
    errors = config_lib.TrainingConfig.validate(c)
    if errors:
      return errors
    errors += c._size_errors() or c._mode_errors()
    if errors:
      return errors
    rows = c.framing(lag=1 if c.mode == "lag_table" else None
                     ).rows_per_sequence(c.seq_length)
    if c.stateful and rows % c.batch_size:
      divisors = [d for d in range(1, rows + 1) if rows % d == 0]
      errors.append(
          f"--batch_size={c.batch_size} must divide the {rows} samples of "
          f"each sequence in stateful mode (row i of a batch continues row i "
          f"of the previous batch, so a sequence must fill whole batches, as "
          f"in Keras): use one of {divisors} or --stateful=false")
    elif c.batch_size > rows * c.n_sequences:
      errors.append(f"--batch_size={c.batch_size} exceeds the "
                    f"{rows * c.n_sequences} training samples")
    return errors

  def device_errors(self) -> list[str]:
    return config_lib.TrainingConfig.device_errors(self.resolved())

  def _size_errors(self) -> list[str]:
    """The input values, repeated by windows, must fit an int32 index."""
    # Samples of a window (or the whole sequence) repeat each value.
    width = (self.seq_length if self.whole_sequence else
             self.window if self.mode in ("lag_window", "lag_table") else 1)
    tokens = (self.n_sequences + self.n_eval) * self.seq_length * width
    if tokens > limits.INT32_MAX:
      return [f"--n_sequences + --n_eval = "
              f"{self.n_sequences + self.n_eval:,} sequences of "
              f"--seq_length={self.seq_length} make {tokens:,} input "
              f"values; at most {limits.INT32_MAX:,}"]
    return []

  def _mode_errors(self) -> list[str]:
    errors = []
    mode, lag, window = self.mode, self.lag, self.window
    if mode == "current":
      if lag != 0:
        errors.append(f"--lag={lag}: --mode=current echoes X(t) (lag 0); use "
                      "--mode=lag_window or lag_one_step for a lag")
      for name in ("mask_missing", "whole_sequence"):
        if getattr(self, name):
          errors.append(f"--{name} does not apply to --mode=current (one "
                        "value a sample, nothing missing)")
    elif mode == "lag_one_step":
      if not 1 <= lag < self.seq_length:
        errors.append(f"--lag={lag} must be in 1..{self.seq_length - 1} "
                      "(--seq_length - 1) for --mode=lag_one_step")
      if self.whole_sequence:
        errors.append("--whole_sequence does not apply to "
                      "--mode=lag_one_step (its samples are one timestep); "
                      "use --mode=lag_window --whole_sequence")
      if self.sequence_output:
        errors.append("--sequence_output needs the echoed value inside the "
                      "sample (--lag < --window); --mode=lag_one_step's "
                      "samples are one timestep")
    else:  # lag_window, lag_table
      if window < 2:
        errors.append(f"--window must be >= 2 for --mode={mode}; got {window}")
      elif window >= self.seq_length:
        errors.append(f"--window={window} must be < --seq_length="
                      f"{self.seq_length}")
      if mode == "lag_table" and lag is not None:
        errors.append(f"--lag={lag} does not apply to --mode=lag_table: it "
                      f"trains --lag=1..{window - 1} (--window - 1)")
      if mode == "lag_window" and not 0 <= lag < window:
        errors.append(f"--lag={lag} must be < --window={window} (and >= 0): "
                      f"the window X(t-{window - 1})..X(t) must hold "
                      f"X(t-{lag})")
    return errors

  def model_config(self) -> dict:
    """What the checkpoint must match."""
    return {"task": "echo", "mode": self.mode, "lag": self.lag,
            "window": self.window, "n_values": self.n_values,
            "n_units": self.n_units, "cell": self.cell,
            "stateful": self.stateful, "mask_missing": self.mask_missing,
            "whole_sequence": self.whole_sequence,
            "sequence_output": self.sequence_output,
            "seq_length": self.seq_length}


def build_model(config: EchoConfig) -> RecurrentClassifier:
  return RecurrentClassifier(vocab=config.n_values,
                             num_classes=config.n_values,
                             units=config.n_units, cell=config.cell,
                             every_step=config.sequence_output)


def _per_sequence(data: dict, n: int) -> dict:
  return {k: v.reshape((n, -1) + v.shape[1:]) for k, v in data.items()}


class EchoTask(task_lib.Task):
  name = "echo"
  config_cls = EchoConfig
  metric = "accuracy"
  size_flags = ("n_units", "n_values")

  def run(self, config: EchoConfig) -> dict:
    runner.check(config)
    cfg = config.resolved()
    workdir = runner.resolve_workdir(cfg, self.name)
    if cfg.mode == "lag_table":
      results = run_lag_table(self, cfg, workdir)
      runner.write_results(workdir, results)
      return results
    return runner.run(self, cfg, workdir)

  def setup(self, cfg: EchoConfig, workdir: str) -> task_lib.Setup:
    framing = cfg.framing()
    length, v = cfg.seq_length, cfg.n_values
    rows, steps = framing.rows_per_sequence(length), framing.timesteps(length)
    train = framing(echo_data.generate(np.random.default_rng([cfg.seed, 0]),
                                       cfg.n_sequences, length, v))
    y_shape = train["y"].shape + (v,)
    print(f"Mode {cfg.mode}, lag {cfg.lag}: {rows} samples of {steps} "
          f"timestep(s) per sequence; X={train['x'].shape + (v,)} y={y_shape} "
          f"(one-hot shapes; stored as int32 ids)"
          + ("; missing values masked" if "x_mask" in train or "y_mask" in
             train else ""))
    model = build_model(cfg)
    # The tutorial shuffles the current mode's samples (Keras' default) and
    # keeps the lag modes' samples in order (shuffle=False).
    fit_config = dataclasses.replace(
        cfg.fit_config(), shuffle=cfg.mode == "current" and not cfg.stateful)
    stateful_kw = {}
    if cfg.stateful:  # the carry is reset after each sequence
      stateful_kw = dict(initial_carry=model.initial_carry(cfg.batch_size),
                         reset_every=rows // cfg.batch_size)
    return task_lib.Setup(
        model=model, init_inputs=(train["x"][:1],), train=train,
        loss_fn=train_lib.make_classifier_loss(model, stateful=cfg.stateful),
        model_config=cfg.model_config(), fit_config=fit_config,
        title=f"RecurrentClassifier ({cfg.cell}, stateful={cfg.stateful})",
        data={"rows": rows, "steps": steps}, **stateful_kw)

  def evaluate(self, cfg: EchoConfig, setup, state) -> dict:
    fresh = _per_sequence(cfg.framing()(echo_data.generate(
        np.random.default_rng([cfg.seed, 1]), cfg.n_eval, cfg.seq_length,
        cfg.n_values)), cfg.n_eval)
    predict = stateful_lib.make_classifier_predict(setup.model, cfg.batch_size,
                                                    cfg.stateful)
    inputs = {k: fresh[k] for k in ("x", "x_mask") if k in fresh}
    pred = np.asarray(predict(state.params, inputs).argmax(-1))
    y, y_mask = fresh["y"], fresh.get("y_mask",
                                      np.ones(fresh["y"].shape, bool))
    accuracy = float(metrics.masked_token_accuracy(pred, y, y_mask))
    right = (pred == y) | ~y_mask
    sequence_accuracy = float(right.reshape(cfg.n_eval, -1).all(-1).mean())
    # The tutorial's printout: the echo of each sample of one fresh sequence
    # (the last step's prediction for a per-step model).
    last = (lambda a: a[0, :, -1]) if cfg.sequence_output else (
        lambda a: a[0])
    shown = last(y_mask)
    expected, predicted = last(y)[shown].tolist(), last(pred)[shown].tolist()
    print(f"Expected:  {expected}")
    print(f"Predicted: {predicted}")
    print(f"Accuracy: {accuracy * 100:.2f}% of the samples of {cfg.n_eval} "
          f"fresh sequences ({sequence_accuracy * 100:.2f}% of them echoed "
          "entirely)")
    results = dict(
        mode=cfg.mode, lag=cfg.lag, accuracy=accuracy,
        sequence_accuracy=sequence_accuracy, n_eval=cfg.n_eval,
        samples_per_sequence=setup.data["rows"],
        timesteps=setup.data["steps"], expected=expected, predicted=predicted)
    if cfg.mode == "lag_one_step":
      results.update(expected_failure(cfg, accuracy))
    return results


def expected_failure(cfg: EchoConfig, accuracy: float) -> dict:
  """lag_one_step fails, as the tutorial shows: says so and why."""
  chance = 1.0 / cfg.n_values
  reproduced = accuracy < 5 * chance
  explanation = FAILURE_EXPLANATION.format(lag=cfg.lag, batch=cfg.batch_size)
  if reproduced:
    print(f"Expected failure (the tutorial's \"beginner's mistake\"): "
          f"{accuracy * 100:.2f}% is chance level ({chance * 100:.0f}%). "
          + explanation)
  else:
    print(f"Unexpected: the beginner's mistake should fail, yet "
          f"{accuracy * 100:.2f}% is above chance ({chance * 100:.0f}%).")
  return dict(expected_failure=True, failure_reproduced=reproduced,
              chance_accuracy=chance, explanation=explanation)


def run_lag_table(task: EchoTask, cfg: EchoConfig, workdir: str) -> dict:
  """lag_window for every lag 1..window-1, each in ``<workdir>/lag<N>``."""
  rows = []
  for lag in range(1, cfg.window):
    print(f"=== lag {lag} ===")
    sub = dataclasses.replace(cfg, mode="lag_window", lag=lag)
    subdir = os.path.join(workdir, f"lag{lag}")
    os.makedirs(subdir, exist_ok=True)
    res = runner.run(task, sub, subdir)
    rows.append({"lag": lag, "accuracy": res["accuracy"],
                 "sequence_accuracy": res["sequence_accuracy"],
                 "train_seconds": res["train_seconds"], "steps": res["step"]})
  header = "| lag | accuracy | echoed sequences | training time (s) |"
  lines = [header, "| ---: | ---: | ---: | ---: |"] + [
      f"| {r['lag']} | {r['accuracy'] * 100:.2f}% | "
      f"{r['sequence_accuracy'] * 100:.2f}% | {r['train_seconds']:.1f} |"
      for r in rows]
  table = "\n".join(lines)
  print(table)
  with open(os.path.join(workdir, "lag_table.md"), "w", encoding="utf-8") as f:
    f.write(f"Echo X(t-lag) from a window of {cfg.window}, {cfg.n_sequences} "
            f"sequences, batch {cfg.batch_size}, stateful={cfg.stateful}, "
            f"seed {cfg.seed}.\n\n{table}\n")
  runner.write_json_atomic(os.path.join(workdir, "lag_table.json"), rows)
  results = runner.base_results(task.name, cfg)
  results.update(workdir=workdir, mode="lag_table", rows=rows,
                 train_seconds=sum(r["train_seconds"] for r in rows))
  return results


TASK = task_lib.register(EchoTask())
run = TASK.run

if __name__ == "__main__":
  from experiments import common
  common.main(TASK)
