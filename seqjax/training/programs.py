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
from typing import Any, Hashable

import jax

from seqjax.training import compile_time


def abstract(args):
  """``args`` as shapes, dtypes and placements only: what lowering needs,
  holding no buffer the caller may donate meanwhile."""
  def spec(x):
    if isinstance(x, jax.Array):
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding,
                                  weak_type=x.weak_type)
    if hasattr(x, "shape") and hasattr(x, "dtype"):
      return jax.ShapeDtypeStruct(x.shape, x.dtype)
    return x
  return jax.tree.map(spec, args)


class Programs:
  """``fn`` (a ``jax.jit`` function) compiled per key, in submission order,
  by one background thread: ``submit(key, args)`` queues a compile for
  these arguments' shapes, ``get(key, args)`` the compiled program (waiting
  for it; a key never submitted is compiled now)."""

  def __init__(self, fn):
    self.fn = fn
    self._futures: dict = {}
    self._pool = concurrent.futures.ThreadPoolExecutor(
        max_workers=1, thread_name_prefix=compile_time.BACKGROUND)

  def submit(self, key: Hashable, args: tuple) -> None:
    if key not in self._futures:
      self._futures[key] = self._pool.submit(self._compile, abstract(args))

  def _compile(self, specs: tuple) -> Any:
    return self.fn.lower(*specs).compile()

  def get(self, key: Hashable, args: tuple):
    self.submit(key, args)
    future = self._futures[key]
    if future.done():
      return future.result()
    start = time.time()  # the clock of JAX's compile spans
    program = future.result()
    compile_time.waited(getattr(self.fn, "__name__", ""), start, time.time())
    return program

  def close(self) -> None:
    """Drops the compiles not started (a run that stops early)."""
    self._pool.shutdown(wait=False, cancel_futures=True)
