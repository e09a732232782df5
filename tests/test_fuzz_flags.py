"""Every experiment's flags, fuzzed with hypothesis.

Random combinations of out-of-range and edge values (negative, zero, beyond
int32, NaN, inf, junk strings, unusable workdirs) must end as the binary's
``main`` would end them: a ``validate()`` message naming the flag, or a
``SeqjaxError``; a config that passes ``validate()`` must run. Never a
traceback from inside JAX or NumPy.

The fuzzer is driven by the config dataclass's fields and their types. To
fuzz another experiment, add ``(module, tiny flags)`` to EXPERIMENTS; the tiny
flags keep the configs that pass validate() cheap to run. More examples:
``SEQJAX_FUZZ_EXAMPLES=500 python -m pytest tests/test_fuzz_flags.py -s``.
"""

import collections
import dataclasses
import importlib
import math
import os
import tempfile
import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from experiments import common
from seqjax.errors import ParameterError, SeqjaxError

pytestmark = pytest.mark.full

EXPERIMENTS = [
    ("experiments.reverse", dict(
        n_features=7, n_steps_in=3, n_steps_out=2, n_units=8, n_samples=32,
        n_eval=4, n_examples=1, batch_size=16, log_every=1, epochs=1,
        steps_per_call=4), 20),
    ("experiments.summary", dict(input_dim=5, units=3), 60),
    ("experiments.echo", dict(
        seq_length=4, n_values=5, n_sequences=4, n_units=3, n_eval=2,
        window=2, batch_size=1, epochs=1, log_every=1, steps_per_call=8), 15),
    ("experiments.addition", dict(
        digits=1, training_size=20, hidden_size=4, n_examples=1, epochs=1,
        batch_size=6, log_every=1, steps_per_call=4), 10),
    # data_path "" falls back to $SEQJAX_CMN_PATH: the test's tiny pair file.
    ("experiments.translate", dict(
        num_samples=20, latent_dim=4, batch_size=4, epochs=1, num_buckets=1,
        eval_batch_size=8, n_examples=1, log_every=1, steps_per_call=4), 16),
]
# experiments.sweep has no config dataclass (its flags are a task name and a
# grid string, fuzzed in test_sweep.py), so it is not in this list.

INT_EDGES = [-2**63, -2**31, -1, 0, 1, 2, 3, 2**31 - 1, 2**31, 2**32, 2**63 - 1,
             2**64]
FLOAT_EDGES = [math.nan, math.inf, -math.inf, -1.0, 0.0, -0.0, 5e-324,
               1e-300, 1e300, 0.01, 1.0]
STR_EDGES = ["", " ", "LSTM", "lstm ", "gru\x00", "adam\n", "../x", "ü", "none"]
# Workdirs, as paths under the example's temporary directory.
WORKDIRS = ["fresh", "existing_file", "below_a_file", "nul_byte", "long_name"]
OUTCOMES = collections.defaultdict(collections.Counter)


def _config_class(module):
  """The binary's config dataclass (the one with validate()): its task's,
  else the one it defines."""
  task = getattr(module, "TASK", None)
  found = [task.config_cls] if task is not None else [
      v for v in vars(module).values() if dataclasses.is_dataclass(v)
      and isinstance(v, type) and v.__module__ == module.__name__]
  found = [v for v in found if hasattr(v, "validate")]
  assert len(found) == 1, f"{module.__name__}: config classes {found}"
  return found[0]


def _strategy(tp, default):
  """Edge and out-of-range values of a field of type ``tp``."""
  if typing.get_origin(tp) is typing.Union:
    (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
    return st.one_of(st.none(), _strategy(inner, default))
  if typing.get_origin(tp) in (list, typing.List):
    return st.lists(st.one_of(st.sampled_from(STR_EDGES), st.text(max_size=8)),
                    max_size=3)
  if tp is bool:
    return st.booleans()
  # The default among the edges: some fuzzed configs pass validate() and run.
  if tp is int:
    return st.one_of(st.just(default), st.sampled_from(INT_EDGES),
                     st.integers(max_value=-1), st.integers(min_value=2**31))
  if tp is float:
    return st.one_of(st.just(default), st.sampled_from(FLOAT_EDGES),
                     st.floats())
  if tp is str:
    return st.one_of(st.just(default), st.sampled_from(STR_EDGES),
                     st.text(max_size=12))
  raise AssertionError(f"no fuzz strategy for {tp}")


def _workdir(kind, tmp):
  if kind == "existing_file" or kind == "below_a_file":
    path = os.path.join(tmp, "a_file")
    open(path, "w").close()
    return path if kind == "existing_file" else os.path.join(path, "w")
  if kind == "nul_byte":
    return os.path.join(tmp, "w\x00x")
  if kind == "long_name":
    return os.path.join(tmp, "w" * 300)
  return os.path.join(tmp, "w")


@pytest.mark.parametrize("module_name,tiny,examples", EXPERIMENTS,
                         ids=[e[0] for e in EXPERIMENTS])
def test_fuzzed_flags_end_in_a_clean_error_or_a_run(module_name, tiny,
                                                    examples, capsys,
                                                    tmp_path, monkeypatch):
  # Never the real cmn.txt: an empty --data_path reads this tiny file.
  tiny_pairs = tmp_path / "tiny_pairs.txt"
  tiny_pairs.write_text("".join(f"w{i} {i % 3}.\t字{i % 7}。\tCC-BY\n"
                                for i in range(24)), encoding="utf-8")
  monkeypatch.setenv("SEQJAX_CMN_PATH", str(tiny_pairs))
  module = importlib.import_module(module_name)
  cls = _config_class(module)
  hints = typing.get_type_hints(cls)
  fields = {f.name: f.default for f in dataclasses.fields(cls)}
  names = sorted(fields)
  outcomes = OUTCOMES[module_name]
  examples = int(os.environ.get("SEQJAX_FUZZ_EXAMPLES", examples))

  @settings(max_examples=examples, deadline=None, derandomize=True,
            database=None, suppress_health_check=list(HealthCheck))
  @given(st.data())
  def check(data):
    # A few flags at a time, so some configs pass validate() and run.
    fuzzed = data.draw(st.lists(st.sampled_from(names), min_size=1,
                                max_size=4, unique=True), label="fuzzed")
    with tempfile.TemporaryDirectory() as tmp:
      values = dict(tiny)
      for name in fuzzed:
        if name == "workdir":
          values[name] = _workdir(data.draw(st.sampled_from(WORKDIRS)), tmp)
        else:
          values[name] = data.draw(_strategy(hints[name], fields[name]),
                                   label=name)
      if "workdir" in fields and "workdir" not in fuzzed:
        values["workdir"] = os.path.join(tmp, "w")
      config = cls(**values)
      errors = config.validate()  # what main() does first
      # The tiny flags alone pass validate(): an error is the fuzzed
      # flags' doing, and says so.
      involved = [n for n in names if n in values]
      if errors:  # main() prints them and exits 2, before any work
        for e in errors:
          assert any(f"--{n}" in e for n in involved), (e, fuzzed)
        assert any(f"--{n}" in e for e in errors for n in fuzzed), (
            errors, fuzzed)
        outcomes["refused by validate()"] += 1
        return
      try:
        module.run(config)
        outcomes["ran"] += 1
      except SeqjaxError as e:
        # Past validate(), only what it cannot see (the file system, the
        # data's size) may still refuse the run, naming a fuzzed flag as
        # the binary shows it (a setting the library named, as its flag).
        shown = str(common.flag_error(e) if isinstance(e, ParameterError)
                    else e)
        assert any(f"--{n}" in shown for n in fuzzed), (shown, fuzzed)
        outcomes[f"refused: {type(e).__name__}"] += 1

  check()
  assert outcomes["ran"] >= 1, dict(outcomes)  # examples did run
  capsys.readouterr()  # the runs' own output
  with capsys.disabled():
    print(f"\n{module_name}: {sum(outcomes.values())} examples: "
          f"{dict(outcomes)}")
