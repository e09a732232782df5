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
