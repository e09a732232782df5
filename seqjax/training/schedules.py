"""Schedules: the rows of each step, as a function of (seed, epoch), so a
run resumed from a checkpoint sees the same batches as an uninterrupted one;
``Feed`` cuts them into the inputs of one train call."""

from __future__ import annotations

import dataclasses

import numpy as np

from seqjax import sharding as sharding_lib


def epoch_permutation(seed: int, epoch: int, n: int, shuffle: bool = True
                      ) -> np.ndarray:
  if not shuffle:
    return np.arange(n)
  return np.random.default_rng([seed, 1_000_003, epoch]).permutation(n)


def stateful_permutation(seed: int, epoch: int, n: int, block_rows: int,
                         shuffle: bool = True) -> np.ndarray:
  """Row order of a stateful epoch: whole blocks of ``block_rows`` rows
  (the batches between two resets) in a (seed, epoch) order, rows within a
  block kept in order."""
  blocks = epoch_permutation(seed, epoch, n // block_rows, shuffle)
  return (blocks[:, None] * block_rows + np.arange(block_rows)).ravel()


@dataclasses.dataclass(frozen=True)
class ShuffledRows:
  """Rows of one dataset in a new (seed, epoch) order each epoch, cut into
  full batches (the partial last batch is dropped)."""

  num_examples: int
  batch_size: int
  shuffle: bool = True
  reset_every: int = 0        # a stateful schedule resets the carry so often

  @property
  def steps_per_epoch(self) -> int:
    return steps_per_epoch(self.num_examples, self.batch_size)

  def epoch(self, seed: int, epoch: int) -> tuple[None, np.ndarray]:
    """-> (None: one dataset, rows of each step flattened (S * B,))."""
    return None, epoch_permutation(seed, epoch, self.num_examples,
                                   self.shuffle)

  def run_length(self, dataset_S, start: int) -> int:
    del dataset_S
    return self.steps_per_epoch - start


@dataclasses.dataclass(frozen=True)
class StatefulBlocks(ShuffledRows):
  """Consecutive rows for a stateful run: shuffling permutes whole blocks of
  ``reset_every`` batches (0: the epoch is one block), never rows in one;
  the carry is reset at the start of each block."""

  def __post_init__(self):
    block = self.batch_size * self.reset_every
    if self.reset_every and self.num_examples % block:
      raise ValueError(f"stateful fit: the {self.num_examples} examples must "
                       f"be whole blocks of reset_every * batch_size = "
                       f"{block} rows")

  def epoch(self, seed: int, epoch: int) -> tuple[None, np.ndarray]:
    block = self.batch_size * (self.reset_every or self.steps_per_epoch)
    return None, stateful_permutation(seed, epoch, self.num_examples, block,
                                      self.shuffle)


@dataclasses.dataclass(frozen=True)
class BucketPlan:
  """Batches drawn from several datasets, e.g. length buckets each padded to
  its own width, for ``fit(..., batch_plan=)``.

  Every batch comes from one dataset; each epoch, each dataset's rows are
  permuted and cut into full batches (the remainder, different each epoch, is
  dropped), and runs of up to ``group`` batches of one dataset are shuffled.
  A run lets one jitted call scan several steps over one dataset's shapes, so
  the step compiles once per dataset. The order is a function of (seed, epoch).
  """

  sizes: tuple[int, ...]      # rows of each dataset
  batch_size: int
  group: int = 1              # batches of one dataset kept consecutive
  shuffle: bool = True
  reset_every = 0             # a schedule's carry resets: never (stateless)

  @property
  def num_examples(self) -> int:
    return sum(self.sizes)

  @property
  def steps_per_epoch(self) -> int:
    return sum(n // self.batch_size for n in self.sizes)

  def epoch(self, seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (dataset of each step (S,), rows of each step flattened (S * B,))."""
    bsz, runs = self.batch_size, []
    for d, n in enumerate(self.sizes):
      rows = (np.random.default_rng([seed, 1_000_003, epoch, d]).permutation(n)
              if self.shuffle else np.arange(n))
      batches = rows[:n // bsz * bsz].reshape(-1, bsz)
      runs += [(d, batches[i:i + self.group])
               for i in range(0, len(batches), self.group)]
    if self.shuffle:
      order = np.random.default_rng([seed, 1_000_004, epoch]).permutation(
          len(runs))
      runs = [runs[i] for i in order]
    dataset_S = np.concatenate(
        [np.full(len(b), d, np.int32) for d, b in runs]).astype(np.int32)
    rows_SB = np.concatenate([b for _, b in runs]).astype(np.int32)
    return dataset_S, rows_SB.reshape(-1)

  def run_length(self, dataset_S: np.ndarray, start: int) -> int:
    """Consecutive steps from ``start`` that use the same dataset."""
    same = dataset_S[start:] == dataset_S[start]
    return int(same.argmin()) if not same.all() else len(same)


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """Full batches per epoch (the partial last batch is dropped: a new
  permutation each epoch means every example is still seen)."""
  return num_examples // batch_size


def make_schedule(data, config, batch_plan=None,
                  stateful: bool = False, reset_every: int = 0):
  """The schedule ``fit`` follows: ``batch_plan``, stateful blocks or
  shuffled rows; checks that it has a step."""
  if batch_plan is not None:
    if batch_plan.batch_size != config.batch_size:
      raise ValueError(f"batch_plan.batch_size {batch_plan.batch_size} != "
                       f"batch_size {config.batch_size}")
    if stateful:
      raise ValueError("stateful fit takes consecutive rows of one dataset, "
                       "not a batch_plan")
    schedule, n = batch_plan, batch_plan.num_examples
  else:
    n = len(next(iter(data.values())))
    schedule = (StatefulBlocks(n, config.batch_size, config.shuffle,
                               reset_every) if stateful else
                ShuffledRows(n, config.batch_size, config.shuffle))
  if schedule.steps_per_epoch == 0:
    raise ValueError(f"batch_size {config.batch_size} is larger than the {n} "
                     "training examples")
  return schedule


class Feed:
  """The next call's inputs from a schedule: K steps of batch indices (the
  steps past ``limit`` or another dataset padded and marked invalid), carry
  resets, placed for the mesh."""

  def __init__(self, schedule, seed: int, k_max: int, mesh):
    self.schedule, self.seed = schedule, seed
    self.k_max, self.mesh = k_max, mesh
    self._epoch, self._order = -1, None

  def __call__(self, step: int, limit: int):
    """-> (dataset index or None, steps k, (idx_KB, valid_K, reset_K))."""
    spe, bsz, k_max = (self.schedule.steps_per_epoch,
                       self.schedule.batch_size, self.k_max)
    if step // spe != self._epoch:
      self._epoch = step // spe
      self._order = self.schedule.epoch(self.seed, self._epoch)
    dataset_S, rows = self._order
    k = min(k_max, limit - step,
            self.schedule.run_length(dataset_S, step % spe))
    offset = (step % spe) * bsz
    idx = np.zeros((k_max, bsz), np.int32)
    idx[:k] = rows[offset:offset + k * bsz].reshape(k, bsz)
    every = self.schedule.reset_every
    reset = (np.arange(step, step + k_max) % every == 0 if every
             else np.zeros(k_max, bool))
    dataset = None if dataset_S is None else int(dataset_S[step % spe])
    return dataset, k, self.place(idx, np.arange(k_max) < k, reset)

  def datasets_in_order(self, step: int, count: int) -> list:
    """The ``count`` datasets in the order training from ``step`` first
    meets them (this epoch's order, then the next epoch's)."""
    spe, seen = self.schedule.steps_per_epoch, []
    epoch = step // spe
    for e in (epoch, epoch + 1):
      dataset_S, _ = self.schedule.epoch(self.seed, e)
      start = step % spe if e == epoch else 0
      for d in dataset_S[start:].tolist():
        if d not in seen:
          seen.append(d)
    return seen + [d for d in range(count) if d not in seen]

  def place(self, idx, valid, reset):
    if self.mesh is None:
      return idx, valid, reset
    return (sharding_lib.shard_indices(idx, self.mesh),
            *sharding_lib.replicate((valid, reset), self.mesh))
