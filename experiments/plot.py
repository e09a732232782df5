"""Learning curves from ``<workdir>/metrics.jsonl``: loss and accuracy.

  python -m experiments.plot runs/rev64 [runs/rev128 ...] [--out=curves.png]
      [--x=step|epoch|wall_s]

One line per workdir: training rows solid, evaluation rows (``"eval": true``)
dashed with markers. The PNG goes to ``--out`` (default
``<workdir>/curves.png`` for one workdir, ``curves.png`` for several).
Needs matplotlib: ``pip install 'seqjax[plot]'``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import NamedTuple

from seqjax.errors import SeqjaxError

X_AXES = ("step", "epoch", "wall_s")


def require_matplotlib():
  """-> matplotlib.pyplot on the file-only Agg backend, or a SeqjaxError."""
  try:
    import matplotlib
  except ImportError as e:
    raise SeqjaxError("plotting needs matplotlib, which is not installed: "
                      "pip install 'seqjax[plot]' (or pip install "
                      "matplotlib)") from e
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def load_metrics(workdir: str) -> tuple[list[dict], list[dict]]:
  """-> (training rows, evaluation rows) of ``<workdir>/metrics.jsonl``."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.isfile(path):
    raise SeqjaxError(f"{path}: no such file (is {workdir} a run's workdir?)")
  train, evals = [], []
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise SeqjaxError(f"{path}:{number}: not a JSON object ({e})") from e
      if not isinstance(row, dict) or "step" not in row:
        raise SeqjaxError(f"{path}:{number}: a row needs a \"step\"")
      (evals if row.get("eval") else train).append(row)
  return train, evals


def _accuracy_keys(rows: list[dict]) -> list[str]:
  return sorted({k for r in rows for k in r if "accuracy" in k})


def _series(rows, x, key):
  pts = [(r[x], r[key]) for r in rows if x in r and r.get(key) is not None]
  return [p[0] for p in pts], [p[1] for p in pts]


def _labels(workdirs: list[str]) -> list[str]:
  names = [os.path.basename(os.path.normpath(w)) for w in workdirs]
  if len(set(names)) < len(names):
    return [os.path.normpath(w) for w in workdirs]
  return names


class Curve(NamedTuple):
  panel: str      # "loss" or "accuracy"
  run: int        # index of the workdir
  label: str
  xs: list
  ys: list
  evaluation: bool


def collect_curves(workdirs: list[str], x: str = "step") -> list[Curve]:
  """What ``plot_curves`` draws: every loss and accuracy series."""
  if x not in X_AXES:
    raise SeqjaxError(f"--x must be one of {', '.join(X_AXES)}; got {x!r}")
  if not workdirs:
    raise SeqjaxError("name at least one workdir")
  runs = [load_metrics(w) for w in workdirs]  # every file checked first
  curves = []
  for run, (label, (train, evals)) in enumerate(zip(_labels(workdirs), runs)):
    for rows, evaluation, kind in ((train, False, "train"),
                                   (evals, True, "eval")):
      if any("loss" in r for r in rows):
        curves.append(Curve("loss", run, f"{label} {kind}",
                            *_series(rows, x, "loss"), evaluation))
      for key in _accuracy_keys(rows):
        curves.append(Curve("accuracy", run, f"{label} {kind} {key}",
                            *_series(rows, x, key), evaluation))
  return curves


def plot_curves(workdirs: list[str], out: str, x: str = "step") -> str:
  """Draws loss and accuracy against ``x`` for each workdir into ``out``."""
  curves = collect_curves(workdirs, x)
  plt = require_matplotlib()
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
  panels = {"loss": axes[0], "accuracy": axes[1]}
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for curve in curves:
    panels[curve.panel].plot(
        curve.xs, curve.ys, "o--" if curve.evaluation else "-",
        color=colors[curve.run % len(colors)], label=curve.label,
        markersize=4)
  axes[0].set(xlabel=x, ylabel="loss", title="Loss")
  axes[1].set(xlabel=x, ylabel="accuracy", title="Accuracy", ylim=(0, 1.02))
  for ax in axes:
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  losses = [y for c in curves if c.panel == "loss" for y in c.ys]
  if losses and min(losses) > 0:  # losses fall by decades
    axes[0].set_yscale("log")
    ticker = plt.matplotlib.ticker
    axes[0].yaxis.set_minor_locator(ticker.LogLocator(subs=(2, 5)))
    axes[0].yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    axes[0].yaxis.set_minor_formatter(ticker.FormatStrFormatter("%g"))
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  fig.savefig(out, dpi=110)
  plt.close(fig)
  return out


def main(argv=None):
  from absl import app
  from absl import flags

  flags.DEFINE_string("out", "", "PNG to write (default: <workdir>/curves.png"
                      " for one workdir, curves.png for several).")
  flags.DEFINE_enum("x", "step", list(X_AXES), "The x axis.")

  def _main(argv):
    workdirs = argv[1:]
    out = flags.FLAGS.out or (os.path.join(workdirs[0], "curves.png")
                              if len(workdirs) == 1 else "curves.png")
    try:
      path = plot_curves(workdirs, out, flags.FLAGS.x)
    except SeqjaxError as e:
      print(f"Error: {e}", file=sys.stderr)
      sys.exit(2)
    print(f"Wrote {path}")

  app.run(_main, argv=argv)


if __name__ == "__main__":
  main()
