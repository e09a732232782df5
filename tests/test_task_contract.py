"""The task contract: declared config bounds, the runner, a task written
against it (sort), registration, and --help listing a binary's own flags."""

import dataclasses
import json
import os
import subprocess
import sys
from typing import Optional

import numpy as np
import pytest

from experiments import sort as sort_exp
from seqjax import config as config_lib
from seqjax import runner
from seqjax import task as task_lib
from seqjax.config import field
from seqjax.errors import SeqjaxError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass
class Declared(config_lib.Config):
  units: int = field(8, "units", low=1, high=100)
  rate: float = field(0.5, "rate", above=0, high=1)
  cell: str = field("lstm", "cell", choices=("lstm", "gru"))
  width: Optional[int] = field(None, "width", low=2)
  plain: int = field(-5, "no declaration")


@pytest.mark.parametrize("values,message", [
    ({"units": 0}, "--units must be positive; got 0"),
    ({"units": 101}, "--units must be <= 100; got 101"),
    ({"rate": 0.0}, "--rate must be positive; got 0.0"),
    ({"rate": float("nan")}, "--rate must be a finite number; got nan"),
    ({"rate": 1.5}, "--rate must be <= 1; got 1.5"),
    ({"cell": "LSTM"}, "--cell must be one of lstm, gru; got 'LSTM'"),
    ({"width": 1}, "--width must be >= 2; got 1"),
])
def test_declarations_generate_the_messages(values, message):
  assert Declared(**values).validate() == [message]


def test_accepted_values_and_unset_optionals_pass():
  assert Declared().validate() == []
  assert Declared(units=1, rate=1.0, cell="gru", width=2).validate() == []
  # Every bad field is named, in field order.
  errors = Declared(units=0, cell="x", width=0).validate()
  assert [e.split()[0] for e in errors] == ["--units", "--cell", "--width"]


def test_validate_is_pure_and_device_checks_are_separate():
  cfg = sort_exp.SortConfig(num_devices=10_000)
  assert cfg.validate() == []  # needs no backend
  errors = cfg.device_errors()
  assert len(errors) == 1 and "--num_devices=10000" in errors[0]
  with pytest.raises(runner.ConfigError, match="--num_devices=10000"):
    runner.check(cfg)


def _tiny_sort(tmp_path, **kw):
  values = dict(length=4, n_values=6, n_units=32, n_samples=2048, n_eval=200,
                epochs=4, batch_size=32, learning_rate=0.01, log_every=0,
                workdir=str(tmp_path / "sort"))
  values.update(kw)
  return sort_exp.SortConfig(**values)


def test_a_new_task_trains_through_the_runner(tmp_path, capsys):
  results = sort_exp.run(_tiny_sort(tmp_path))
  # Chance of sorting 4 values of 5 exactly is far below this.
  assert results["accuracy"] > 0.8, results["accuracy"]
  saved = json.load(open(tmp_path / "sort" / "results.json"))
  assert saved["accuracy"] == results["accuracy"]
  assert saved["task"] == "sort" and saved["step"] == 4 * (2048 // 32)
  for key in ("train_seconds", "train_samples_per_second", "n_params",
              "flags", "versions"):
    assert key in saved
  out = capsys.readouterr().out
  assert "Sorted exactly" in out and "Total params" in out
  # The same command again resumes (nothing left to train) and evaluates the
  # same model.
  again = sort_exp.run(_tiny_sort(tmp_path))
  assert again["accuracy"] == results["accuracy"]
  assert "Resumed from the checkpoint at step 256" in capsys.readouterr().out


def test_the_sort_data_is_sorted_and_streams_differ():
  cfg = sort_exp.SortConfig(length=5, n_values=9)
  a, b = sort_exp.generate(cfg, 0, 50), sort_exp.generate(cfg, 1, 50)
  assert np.array_equal(a["target"], np.sort(a["src"], axis=1))
  assert np.array_equal(a["dec_in"][:, 1:], a["target"][:, :-1])
  assert not np.array_equal(a["src"], b["src"])
  assert a["src"].min() >= 1 and a["src"].max() <= 8


def test_a_model_too_large_to_index_is_refused_before_any_allocation(tmp_path):
  class Huge(sort_exp.SortTask):
    size_flags = ("n_units",)

    def setup(self, config, workdir):
      setup = super().setup(config, workdir)
      model = setup.model
      return dataclasses.replace(setup, model=model.clone(
          settings=dataclasses.replace(model.settings, units=30_000)))
  with pytest.raises(SeqjaxError, match=r"parameters, more than 2,147,483,647"
                     r": lower --n_units"):
    runner.run(Huge(), _tiny_sort(tmp_path, n_samples=64))
  assert not os.path.exists(tmp_path / "sort" / "checkpoints")


def test_tasks_register_explicitly_and_rank_by_their_metric():
  assert task_lib.get("sort") is sort_exp.TASK
  assert {"reverse", "echo", "addition", "translate", "sort"} <= set(
      task_lib.known())
  from experiments import addition
  assert task_lib.get("addition").metric == "dev_exact_match"
  assert task_lib.get("addition") is addition.TASK


def test_help_lists_the_binary_flags_first_then_the_shared_ones():
  out = subprocess.run(
      [sys.executable, "-m", "experiments.reverse", "--help"], cwd=ROOT,
      capture_output=True, text=True, timeout=120,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  text = out.stdout + out.stderr
  assert "--n_units" in text and "--epochs" in text, text[-2000:]
  flags = text[text.index("reverse flags:"):]  # after the module docstring
  assert flags.index("--n_units") < flags.index("training flags") < (
      flags.index("--epochs"))
