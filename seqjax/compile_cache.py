"""JAX's persistent compilation cache: a program compiled once is read back
by every later process that builds the same program.

A cache is a convenience, never a dependency: a directory that cannot be
created or written turns the cache off with one warning, and an entry JAX
cannot read is compiled again (JAX's own rule), so a run's numbers are the
same with the cache on, off or damaged.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from typing import Optional

import jax

ENV_VAR = "SEQJAX_COMPILATION_CACHE_DIR"


def default_dir() -> str:
  """``$SEQJAX_COMPILATION_CACHE_DIR``, else the user's cache folder
  (``$XDG_CACHE_HOME`` or ``~/.cache``) + ``seqjax/xla``."""
  if ENV_VAR in os.environ:
    return os.environ[ENV_VAR]
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
      os.path.expanduser("~"), ".cache")
  return os.path.join(base, "seqjax", "xla")


def _unusable(path: str) -> Optional[str]:
  """Why ``path`` cannot hold the cache, or None when it can."""
  try:
    os.makedirs(path, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-"):
      pass
  except OSError as e:
    return e.strerror or str(e)
  return None


def enable(path: str) -> Optional[str]:
  """Turns the persistent cache on at ``path`` ("" leaves it off). Returns
  a one-line warning when ``path`` is unusable (the cache stays off), else
  None."""
  if not path:
    return None
  path = os.path.abspath(os.path.expanduser(path))
  why = _unusable(path)
  if why is not None:
    return (f"compilation cache {path} is not usable ({why}); compiling "
            "without it")
  jax.config.update("jax_compilation_cache_dir", path)
  # Every program: on a CPU even the small ones take 0.1-1 s to compile,
  # far more than reading an entry back.
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  # JAX warns with a traceback-sized text for an entry it cannot read or
  # write; the recompile that follows is the whole story.
  warnings.filterwarnings("once", message=".*persistent compilation cache.*")
  return None


# XLA:CPU's LLVM optimization level 1 (XLA's default is 3): on this
# project's CPU the attention model's first step takes 0.71x the seconds
# and it trains 1.05x as fast; decoding is within 8% either way
# (benchmarks/RESULTS.md, "XLA:CPU compile flags").
CPU_FLAGS = ("--xla_backend_optimization_level=1",)
_ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin",
                        "jax_rocm60_plugin", "jax_rocm7_plugin", "libtpu")


def use_cpu_flags(flags=CPU_FLAGS) -> list[str]:
  """Adds ``flags`` to ``$XLA_FLAGS`` for a process that computes on the
  CPU, before JAX starts its backend; a flag whose option ``$XLA_FLAGS``
  already sets is the user's choice and stays. Where an accelerator plugin
  is installed, or the backend already runs, nothing changes. Returns the
  flags added."""
  import importlib.util
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
  platforms = os.environ.get("JAX_PLATFORMS", "")
  on_cpu = platforms == "cpu" or not platforms and not any(
      importlib.util.find_spec(p) for p in _ACCELERATOR_PLUGINS)
  if not on_cpu or xla_bridge.backends_are_initialized():
    return []
  current = os.environ.get("XLA_FLAGS", "")
  added = [f for f in flags if f.split("=")[0] not in current]
  if added:
    os.environ["XLA_FLAGS"] = " ".join([current] * bool(current) + added)
  return added
