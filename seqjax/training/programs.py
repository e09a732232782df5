"""A jitted function's compiled programs, compiled in the background.

A length-bucketed run needs one train program per bucket. Compiling them
all before the first step makes the user wait for every one; compiling each
when its bucket first comes up stalls an epoch. ``Programs`` compiles them
in order in a background thread (XLA releases the GIL while it compiles), so
the first step waits for its own program only and training runs while the
others compile; a call whose program is not ready yet waits for it.
"""

from __future__ import annotations

import concurrent.futures
import time
from typing import Hashable

import jax

from seqjax.training import compile_time


def abstract(args):
  """``args`` as shapes, dtypes and placements only: what lowering needs,
  holding no buffer the caller may donate meanwhile."""
  def spec(x):
    if isinstance(x, jax.Array):  # placed as given: jit compiles apart
      return jax.ShapeDtypeStruct(
          x.shape, x.dtype, weak_type=x.weak_type,
          sharding=x.sharding if x.committed else None)
    if hasattr(x, "shape") and hasattr(x, "dtype"):
      return jax.ShapeDtypeStruct(x.shape, x.dtype)
    return x
  return jax.tree.map(spec, args)


_POOL = None


def _pool() -> concurrent.futures.ThreadPoolExecutor:
  """One background compile thread for the process: compiles queue rather
  than compete with each other and with training for the cores."""
  global _POOL
  if _POOL is None:
    _POOL = concurrent.futures.ThreadPoolExecutor(
        max_workers=1, thread_name_prefix=compile_time.BACKGROUND)
  return _POOL


def compile_ahead(fn, *args) -> concurrent.futures.Future:
  """Queues ``fn`` (a ``jax.jit`` function) for compiling, in the
  background, for the shapes of ``args``; a later call of ``fn`` with
  such arguments finds the program compiled."""
  specs = abstract(args)
  return _pool().submit(lambda: fn.lower(*specs).compile())


def wait_for_background() -> None:
  """Returns once every compile queued so far has finished."""
  _pool().submit(lambda: None).result()


class Programs:
  """``fn`` (a ``jax.jit`` function) compiled per key, in submission order,
  by the background compile thread: ``submit(key, args)`` queues a compile for
  these arguments' shapes, ``get(key, args)`` the compiled program (waiting
  for it; a key never submitted is compiled now)."""

  def __init__(self, fn):
    self.fn = fn
    self._futures: dict = {}

  def submit(self, key: Hashable, args: tuple) -> None:
    if key not in self._futures:
      self._futures[key] = compile_ahead(self.fn, *args)

  def get(self, key: Hashable, args: tuple):
    """``fn``, once its program for ``args`` is compiled (jit finds it)."""
    self.submit(key, args)
    future = self._futures[key]
    start = time.time()  # the clock of JAX's compile spans
    waited = not future.done()
    future.result()  # a failed compile raises here
    if waited:
      compile_time.waited(getattr(self.fn, "__name__", ""), start,
                          time.time())
    return self.fn

  def close(self) -> None:
    """Drops the compiles not started (a run that stops early)."""
    for future in self._futures.values():
      future.cancel()
