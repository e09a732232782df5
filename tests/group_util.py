"""Shared by the vectorized-group tests."""

import os

import pytest

from seqjax import group_runner
from seqjax import reliability


def interrupt_group(task, configs, monkeypatch) -> list[list[int]]:
  """Runs ``configs`` as a group that SIGTERM's guard stops at its second
  poll (every member saves); -> each member's checkpoint steps."""
  polls = iter(range(100))
  monkeypatch.setattr(reliability.InterruptGuard, "requested",
                      lambda self: next(polls) >= 1)
  with pytest.raises(reliability.TrainingInterrupted):
    group_runner.run_group(task, configs)
  monkeypatch.undo()
  return [sorted(int(s) for s in os.listdir(os.path.join(c.workdir,
                                                         "checkpoints")))
          for c in configs]
