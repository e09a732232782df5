"""A Keras-style parameter summary table of a Flax parameter pytree, and
the parameters' fingerprint."""

from __future__ import annotations

import hashlib
import math

import jax
import numpy as np


def param_rows(params) -> list[tuple[str, list[tuple[str, tuple]], int]]:
  """One row per layer: (layer name, [(param name, shape)], parameter count).

  A layer is a top-level entry under "params" (encoder, decoder, readout...).
  """
  tree = params.get("params", params)
  rows = []
  for layer, sub in tree.items():
    leaves = jax.tree_util.tree_leaves_with_path(sub)
    shapes = [("/".join(str(getattr(k, "key", k)) for k in path), tuple(x.shape))
              for path, x in leaves]
    rows.append((layer, shapes, sum(math.prod(s) for _, s in shapes)))
  return rows


def count_params(params) -> int:
  return sum(x.size for x in jax.tree_util.tree_leaves(params))


def format_summary(params, title: str = "Model") -> str:
  rows = param_rows(params)
  shape_txt = [", ".join(f"{n} {s}" for n, s in shapes) for _, shapes, _ in rows]
  w_layer = max([5] + [len(r[0]) for r in rows])
  w_count = max([7] + [len(f"{r[2]:,}") for r in rows])
  lines = [f'{title}', f"{'Layer':<{w_layer}}  {'Params':>{w_count}}  Shapes",
           "-" * (w_layer + w_count + 4 + max([6] + [len(s) for s in shape_txt]))]
  for (layer, _, count), txt in zip(rows, shape_txt):
    lines.append(f"{layer:<{w_layer}}  {count:>{w_count},}  {txt}")
  lines.append(f"Total params: {count_params(params):,}")
  return "\n".join(lines)


def params_fingerprint(params) -> str:
  """sha256 of every parameter's bytes (in tree order): equal parameters on
  every process, or across reruns with one seed, have equal fingerprints."""
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(jax.device_get(params)):
    digest.update(np.ascontiguousarray(leaf).tobytes())
  return digest.hexdigest()
