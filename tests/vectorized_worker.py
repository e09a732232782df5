"""Run by tests/test_vectorized.py in a subprocess with 8 simulated CPU
devices: 16 members trained on one device and split over the 8 (mesh axis
"runs"). Prints one JSON line for the test to check.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 \\
      python -m tests.vectorized_worker
"""

import dataclasses
import json

import jax
import numpy as np

from experiments import reverse
from seqjax import vectorized

SMALL = dict(n_features=11, n_steps_in=4, n_steps_out=2, n_units=32,
             n_samples=640, batch_size=32, log_every=10)


def _group(configs):
  setups = [reverse.TASK.setup(c, "") for c in configs]
  params = [s.model.init(jax.random.key(c.seed), *s.init_inputs)
            for s, c in zip(setups, configs)]
  group = vectorized.init_group(
      setups[0].model, params, vectorized.make_optimizer("adam"),
      [vectorized.hyperparams("adam", c.learning_rate) for c in configs])
  return setups, group


def main():
  configs = [reverse.ReverseConfig(seed=i, learning_rate=(0.01, 0.003)[i % 2],
                                   **SMALL) for i in range(16)]
  fit_configs = [c.fit_config() for c in configs]
  out = {}
  for name, mesh in (("one", None), ("eight", vectorized.make_runs_mesh(8))):
    setups, group = _group(configs)
    data = vectorized.stack([s.train for s in setups])
    group, _ = vectorized.fit_group(group, data, setups[0].loss_fn,
                                    fit_configs, mesh=mesh)
    if mesh is not None:
      leaf = jax.tree.leaves(group.params)[0]
      out["spread"] = sorted(s.data.shape[0] for s in leaf.addressable_shards)
      out["devices"] = len(leaf.sharding.device_set)
    out[name] = jax.device_get(group.params)
    out["steps"] = np.asarray(group.step).tolist()
  err = max(float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
            for a, b in zip(jax.tree.leaves(out["eight"]),
                            jax.tree.leaves(out["one"])))
  bitwise = all(np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(out["eight"]), jax.tree.leaves(out["one"])))
  print(json.dumps({"members": 16, "devices": out["devices"],
                    "spread": out["spread"], "steps": out["steps"],
                    "max_scale_error": err, "bitwise": bitwise}))


if __name__ == "__main__":
  main()
