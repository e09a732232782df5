"""Learning curves from ``<workdir>/metrics.jsonl``: loss, accuracy, chrF/BLEU.

  python -m experiments.plot runs/rev64 [runs/rev128 ...] [--out=curves.png]
      [--x=step|epoch|wall_s] [--sweep_dir=runs/sweep]

One line per workdir: training rows solid, evaluation rows (``"eval": true``)
dashed with markers. Panels: loss (``loss`` and ``*_loss`` such as
``val_loss``), accuracy (every ``*accuracy*`` key) and, when a run logged
them, translation quality (``dev_chrf``, ``dev_bleu``, ``val_chrf``...: one
point per evaluation, i.e. per epoch; ``--x=epoch`` puts epochs on the axis).
``--sweep_dir`` overlays every run of a sweep (``<sweep_dir>/runs/*``, see
``experiments.sweep``), after any workdirs named. Rows are read as
``seqjax.reliability.read_jsonl`` reads them: a torn last line (a run killed
mid-write, or one still writing) is left out; a damaged complete line is an
error naming it. The PNG goes to ``--out`` (default ``<workdir>/curves.png``
for one workdir, ``<sweep_dir>/curves.png`` for a sweep, ``curves.png`` for
several). Needs matplotlib: ``pip install 'seqjax[plot]'``.
"""

from __future__ import annotations

import glob
import json
import os
import re
import sys
from typing import NamedTuple

from seqjax import reliability
from seqjax.errors import SeqjaxError

X_AXES = ("step", "epoch", "wall_s")
PANELS = ("loss", "accuracy", "quality")
_QUALITY = re.compile(r"(^|_)(chrf|bleu)$", re.IGNORECASE)


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


def _damaged_line(path: str) -> tuple[int, str]:
  """(number, error) of the first complete line that is not JSON."""
  with open(path, "rb") as f:
    complete = f.read().split(b"\n")[:-1]  # the last piece is torn or empty
  for number, line in enumerate(complete, 1):
    if line.strip():
      try:
        json.loads(line)
      except ValueError as e:
        return number, str(e)
  return 0, "unreadable"


def load_metrics(workdir: str) -> tuple[list[dict], list[dict]]:
  """-> (training rows, evaluation rows) of ``<workdir>/metrics.jsonl``."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.isfile(path):
    raise SeqjaxError(f"{path}: no such file (is {workdir} a run's workdir?)")
  try:
    rows = reliability.read_jsonl(path)
  except ValueError as e:
    number, error = _damaged_line(path)
    raise SeqjaxError(f"{path}:{number}: not a JSON object ({error})") from e
  train, evals = [], []
  for number, row in enumerate(rows, 1):
    if not isinstance(row, dict) or "step" not in row:
      raise SeqjaxError(f"{path}: row {number}: a row needs a \"step\"")
    (evals if row.get("eval") else train).append(row)
  return train, evals


def sweep_workdirs(sweep_dir: str) -> list[str]:
  """The workdirs of a sweep's runs that logged metrics, sorted by name."""
  runs = sorted(os.path.dirname(p) for p in glob.glob(
      os.path.join(glob.escape(sweep_dir), "runs", "*", "metrics.jsonl")))
  if not runs:
    raise SeqjaxError(f"{sweep_dir}: no runs/*/metrics.jsonl (is it a "
                      f"sweep's --sweep_dir?)")
  return runs


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def panel_of(key: str):
  """The panel a metrics key is drawn in, or None."""
  if key == "loss" or key.endswith("_loss"):
    return "loss"
  if "accuracy" in key:
    return "accuracy"
  if _QUALITY.search(key):
    return "quality"
  return None


def _keys(rows: list[dict]) -> list[str]:
  """The numeric keys of ``rows`` that have a panel, "loss" first."""
  keys = {k for r in rows for k, v in r.items()
          if _is_number(v) and panel_of(k)}
  return sorted(keys, key=lambda k: (k != "loss", k))


def _series(rows, x, key):
  pts = [(r[x], r[key]) for r in rows
         if x in r and _is_number(r.get(key))]
  return [p[0] for p in pts], [p[1] for p in pts]


def _labels(workdirs: list[str]) -> list[str]:
  names = [os.path.basename(os.path.normpath(w)) for w in workdirs]
  if len(set(names)) < len(names):
    return [os.path.normpath(w) for w in workdirs]
  return names


class Curve(NamedTuple):
  panel: str      # one of PANELS
  run: int        # index of the workdir
  label: str
  xs: list
  ys: list
  evaluation: bool


def collect_curves(workdirs: list[str], x: str = "step") -> list[Curve]:
  """What ``plot_curves`` draws: every loss, accuracy and quality series."""
  if x not in X_AXES:
    raise SeqjaxError(f"--x must be one of {', '.join(X_AXES)}; got {x!r}")
  if not workdirs:
    raise SeqjaxError("name at least one workdir (or --sweep_dir)")
  runs = [load_metrics(w) for w in workdirs]  # every file checked first
  curves = []
  for run, (label, (train, evals)) in enumerate(zip(_labels(workdirs), runs)):
    for rows, evaluation, kind in ((train, False, "train"),
                                   (evals, True, "eval")):
      for key in _keys(rows):
        name = f"{label} {kind}" + ("" if key == "loss" else f" {key}")
        curves.append(Curve(panel_of(key), run, name,
                            *_series(rows, x, key), evaluation))
  return curves


TITLES = {"loss": "Loss", "accuracy": "Accuracy",
          "quality": "Translation quality (chrF, BLEU)"}


def _log_scale(ax, plt, values):
  if values and min(values) > 0:  # losses fall by decades
    ax.set_yscale("log")
    ticker = plt.matplotlib.ticker
    ax.yaxis.set_minor_locator(ticker.LogLocator(subs=(2, 5)))
    ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(ticker.FormatStrFormatter("%g"))


def plot_curves(workdirs: list[str], out: str, x: str = "step") -> str:
  """Draws each panel's series against ``x`` for each workdir into ``out``;
  the quality panel only when some run logged chrF or BLEU."""
  curves = collect_curves(workdirs, x)
  plt = require_matplotlib()
  names = [p for p in PANELS
           if p != "quality" or any(c.panel == p for c in curves)]
  fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.5))
  panels = dict(zip(names, axes))
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for curve in curves:
    panels[curve.panel].plot(
        curve.xs, curve.ys, "o--" if curve.evaluation else "-",
        color=colors[curve.run % len(colors)], label=curve.label,
        markersize=4)
  for name, ax in panels.items():
    ax.set(xlabel=x, ylabel=name, title=TITLES[name])
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7)
  panels["accuracy"].set_ylim(0, 1.02)
  _log_scale(panels["loss"], plt,
             [y for c in curves if c.panel == "loss" for y in c.ys])
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  fig.savefig(out, dpi=110)
  plt.close(fig)
  return out


def default_out(workdirs: list[str], sweep_dir: str = "") -> str:
  if len(workdirs) == 1:
    return os.path.join(workdirs[0], "curves.png")
  if sweep_dir:
    return os.path.join(sweep_dir, "curves.png")
  return "curves.png"


def main(argv=None):
  from absl import app
  from absl import flags

  flags.DEFINE_string("out", "", "PNG to write (default: <workdir>/curves.png"
                      " for one workdir, <sweep_dir>/curves.png for a sweep, "
                      "curves.png for several).")
  flags.DEFINE_enum("x", "step", list(X_AXES), "The x axis.")
  flags.DEFINE_string("sweep_dir", "", "Also overlay every run of this sweep "
                      "(<sweep_dir>/runs/*, as experiments.sweep writes).")

  def _main(argv):
    try:
      workdirs = argv[1:]
      sweep_dir = flags.FLAGS.sweep_dir
      if sweep_dir:
        workdirs = workdirs + sweep_workdirs(sweep_dir)
      out = flags.FLAGS.out or default_out(workdirs, sweep_dir)
      path = plot_curves(workdirs, out, flags.FLAGS.x)
    except SeqjaxError as e:
      print(f"Error: {e}", file=sys.stderr)
      sys.exit(2)
    print(f"Wrote {path}")

  app.run(_main, argv=argv)


if __name__ == "__main__":
  main()
