"""Flags from config dataclasses, and the ``main`` every binary shares.

A binary's flags are the fields of its config dataclass; they are defined only
when the binary runs, so tests can import several experiments in one process.
"""

from __future__ import annotations

import dataclasses
import logging as std_logging
import os
import sys
import typing

from absl import app
from absl import flags
from absl import logging

from seqjax import compile_cache
from seqjax import config as config_lib
from seqjax import reliability
from seqjax.errors import ParameterError, SeqjaxError

FLAGS = flags.FLAGS
TRAINING_FLAGS = "training flags (seqjax.config.TrainingConfig)"
RUNTIME_FLAGS = "runtime flags"


def define_runtime_flags(flag_values=FLAGS) -> None:
  """Flags of the process, not of the run: they change no number."""
  if "compilation_cache_dir" not in flag_values:
    flags.DEFINE_string(
        "compilation_cache_dir", compile_cache.default_dir(),
        "Where compiled XLA programs are kept across runs, so a rerun of "
        "the same shapes starts without compiling; empty: no cache. Default: "
        f"${compile_cache.ENV_VAR}, else ~/.cache/seqjax/xla.",
        module_name=RUNTIME_FLAGS, flag_values=flag_values)


def start_compilation_cache(path: str) -> None:
  """The persistent compilation cache at ``path``; a warning line (not a
  failure) when it cannot be used."""
  warning = compile_cache.enable(path)
  if warning:
    logging.warning("%s", warning)


def _flag_kind(tp):
  """Maps a field type to an absl DEFINE_* function."""
  if typing.get_origin(tp) is typing.Union:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    tp = args[0]
  if typing.get_origin(tp) in (list, typing.List):
    return flags.DEFINE_multi_string
  return {bool: flags.DEFINE_bool, int: flags.DEFINE_integer,
          float: flags.DEFINE_float, str: flags.DEFINE_string}[tp]


def define_flags(config_cls, module_name: str, flag_values=FLAGS) -> None:
  """The fields of ``config_cls`` as flags: the task's own under
  ``module_name``, the shared training flags under ``seqjax.config``, so
  ``--help`` lists the task's first, then the shared ones."""
  hints = typing.get_type_hints(config_cls)
  shared = {f.name for f in dataclasses.fields(config_lib.TrainingConfig)}
  for f in dataclasses.fields(config_cls):
    default = (f.default if f.default is not dataclasses.MISSING
               else f.default_factory())
    owner = TRAINING_FLAGS if f.name in shared else module_name
    _flag_kind(hints[f.name])(f.name, default, f.metadata.get("help", f.name),
                              module_name=owner, flag_values=flag_values)
  # absl's --help shows the main module's flags, which for `python -m` is a
  # file path that owns none: show the task's, then the shared ones.
  flag_values.__dict__["main_module_help"] = lambda: "\n".join(
      flag_values.module_help(m)
      for m in (module_name, TRAINING_FLAGS, RUNTIME_FLAGS)
      if flag_values.get_key_flags_for_module(m))


def config_from_flags(config_cls, flag_values=FLAGS):
  return config_cls(**{f.name: flag_values[f.name].value
                       for f in dataclasses.fields(config_cls)})


def config_from_flagfile(task, path: str):
  """``task``'s config as ``--flagfile=path`` sets it (the other flags at
  their defaults), parsed by absl as the binary would."""
  flag_values = flags.FlagValues()
  define_flags(task.config_cls, f"{task.name} flags", flag_values)
  flag_values([task.name, f"--flagfile={path}"])
  return config_from_flags(task.config_cls, flag_values)


class _DropLibraryInfo(std_logging.Filter):
  """Keeps orbax's (many) INFO lines out of the run's log; warnings pass."""

  def filter(self, record):
    return record.levelno >= std_logging.WARNING or not any(
        p in record.pathname for p in ("/orbax/", "/jax/", "/flax/"))


def quiet_library_logs() -> None:
  logging.get_absl_handler().addFilter(_DropLibraryInfo())


def flag_error(e: ParameterError, flag_of: typing.Optional[dict] = None
               ) -> ParameterError:
  """A library error naming a setting, named by its flag instead
  (``flag_of``: the flags named otherwise than their setting)."""
  if e.label:
    return e
  flag = lambda name: "--" + (flag_of or {}).get(name, name)
  return e.renamed(flag(e.param), flag)


def _is_config_error(e: Exception) -> bool:
  # seqjax.runner (the training stack) is imported only by the runs that use
  # it: where it was not, none of its errors was raised.
  runner = sys.modules.get("seqjax.runner")
  return runner is not None and isinstance(e, runner.ConfigError)


def main(task) -> None:
  """Defines the flags of ``task.config_cls`` and runs ``task.run(config)``.

  Bad flags stop before any work with a message naming them; a SeqjaxError
  (bad file, mismatched checkpoint, non-finite loss, busy workdir) ends the
  run with its message, exit 2. Ctrl-C / SIGTERM in training saves a
  checkpoint first; exit 130 / 143. Running out of memory is reported as a
  message, exit 2.
  """
  config_cls, run = task.config_cls, task.run
  compile_cache.use_cpu_flags()
  define_flags(config_cls, f"{task.name} flags")
  define_runtime_flags()

  def _main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.INFO)
    quiet_library_logs()
    start_compilation_cache(FLAGS.compilation_cache_dir)
    config = config_from_flags(config_cls)
    errors = config.validate()
    if errors:
      print("Bad flags:\n  " + "\n  ".join(errors), file=sys.stderr)
      sys.exit(2)
    try:
      run(config)
    except SeqjaxError as e:
      # A ConfigError (the checks that need the devices) names its flags.
      if isinstance(e, ParameterError):
        e = flag_error(e)
      print(str(e) if _is_config_error(e) else f"Error: {e}", file=sys.stderr)
      sys.exit(2)
    except reliability.TrainingInterrupted as e:
      print(str(e), file=sys.stderr)
      sys.exit(e.exit_code)
    except KeyboardInterrupt:
      print("Interrupted; nothing after the last checkpoint was saved. Rerun "
            "the same command to resume.", file=sys.stderr)
      # At once, as a second signal asks: an interpreter shutdown here waits
      # on (and can crash in) the threads of a computation still running.
      sys.stdout.flush()
      sys.stderr.flush()
      os._exit(130)
    except MemoryError:
      print("Error: out of host memory with these flags; lower the sizes "
            "(--batch_size, sample counts, units, vocabulary).",
            file=sys.stderr)
      sys.exit(2)
    except Exception as e:  # pylint: disable=broad-except
      if "RESOURCE_EXHAUSTED" not in str(e):
        raise
      print(f"Error: the device ran out of memory with these flags; lower the "
            f"sizes (--batch_size, units, vocabulary). "
            f"({str(e).splitlines()[0][:300]})", file=sys.stderr)
      sys.exit(2)

  app.run(_main)
