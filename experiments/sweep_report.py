"""A sweep's reports: sweep.csv and sweep.md ranked by the task's metric,
and sweep.png (with matplotlib).
"""

from __future__ import annotations

import csv
import math
import os
from typing import Optional

from seqjax.errors import SeqjaxError
from experiments.sweep_plan import Plan


def _number(x) -> float:
  return x if isinstance(x, (int, float)) and not math.isnan(x) else -math.inf


def rank(rows: list[dict], metric: str = "accuracy", maximize: bool = True
         ) -> list[dict]:
  """Done runs by ``metric``, best first (descending when ``maximize``),
  then samples/s (descending); runs without it after them, failed ones last."""
  sign = -1 if maximize else 1

  def key(r):
    value = _number(r.get(metric))
    missing = value == -math.inf
    return (r["status"] != "done", missing, 0 if missing else sign * value,
            -_number(r["samples_per_s"]))
  return sorted(rows, key=key)


def fmt(x, digits: int = 4) -> str:
  if x is None:
    return ""
  if isinstance(x, float):
    return f"{x:.{digits}g}" if abs(x) < 1e3 else f"{x:,.0f}"
  return str(x)


def write_reports(plan: Plan, rows: list[dict]) -> list[str]:
  """sweep.csv, sweep.md and (with matplotlib) sweep.png; -> their paths."""
  m = plan.metric
  ranked = rank(rows, m, plan.task.maximize)
  columns = (["rank", "run", "status"] + plan.grid_keys +
             [m, "samples_per_s", "train_seconds", "steps", "wall_s",
              "workdir", "error"])
  csv_path = os.path.join(plan.sweep_dir, "sweep.csv")
  with open(csv_path + ".tmp", "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, columns)
    writer.writeheader()
    for i, row in enumerate(ranked, 1):
      writer.writerow({"rank": i, **{k: row.get(k) for k in columns[1:]}})
  os.replace(csv_path + ".tmp", csv_path)

  done = [r for r in ranked if r["status"] == "done"]
  failed = [r for r in ranked if r["status"] != "done"]
  keys = plan.varying_keys
  lines = [f"# Sweep: {plan.task.name}", "",
           f"Grid `{plan.grid_text}`: {len(plan.runs)} runs; {len(done)} done, "
           f"{len(failed)} failed, {len(plan.runs) - len(rows)} not run yet.",
           "", f"## Ranked by {m} ({'higher' if plan.task.maximize else 'lower'}"
           " is better; then samples/s)", "",
           "| rank | run | " + "".join(f"{k} | " for k in keys) +
           f"{m} | samples/s | train s | steps |",
           "|---" * (6 + len(keys)) + "|"]
  for i, r in enumerate(done, 1):
    lines.append(f"| {i} | {r['run']} | " +
                 "".join(f"{fmt(r[k])} | " for k in keys) +
                 f"{fmt(r[m])} | {fmt(r['samples_per_s'])} | "
                 f"{fmt(r['train_seconds'], 3)} | {fmt(r['steps'])} |")
  fastest = sorted(done, key=lambda r: -_number(r["samples_per_s"]))
  lines += ["", "## Ranked by samples/s", "",
            f"| rank | run | samples/s | {m} |", "|---|---|---|---|"]
  lines += [f"| {i} | {r['run']} | {fmt(r['samples_per_s'])} | "
            f"{fmt(r[m])} |" for i, r in enumerate(fastest, 1)]
  if failed:
    lines += ["", "## Failed", ""]
    lines += [f"- `{r['run']}`: {r['error']} (log: {r['workdir']}/log.txt)"
              for r in failed]
  md_path = os.path.join(plan.sweep_dir, "sweep.md")
  with open(md_path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  paths = [csv_path, md_path]
  png = _plot(plan, done)
  return paths + ([png] if png else [])


def _plot(plan: Plan, done: list[dict]) -> Optional[str]:
  from experiments import plot
  m = plan.metric
  points = [r for r in done if r[m] is not None
            and r["train_seconds"] is not None]
  if not points:
    return None
  try:
    plt = plot.require_matplotlib()
  except SeqjaxError:
    return None  # the CSV and the table are the report; the plot is extra
  fig, ax = plt.subplots(figsize=(7, 4.5))
  ax.scatter([r["train_seconds"] for r in points],
             [r[m] for r in points])
  for r in points:
    ax.annotate(r["run"], (r["train_seconds"], r[m]), fontsize=7,
                xytext=(3, 3), textcoords="offset points")
  ax.margins(0.15)  # room for the labels
  ax.set(xlabel="training time (s)", ylabel=m,
         title=f"Sweep: {plan.task.name}")
  ax.grid(alpha=0.3)
  fig.tight_layout()
  path = os.path.join(plan.sweep_dir, "sweep.png")
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
