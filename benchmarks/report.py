"""Markdown of a ``benchmarks.run --json`` file, for RESULTS.md.

  python -m benchmarks.report --json=PATH
"""

from __future__ import annotations

import dataclasses
import json
import types

from seqjax.errors import SeqjaxError
from seqjax.config import field

from benchmarks import decode
from benchmarks.harness import KEYS

FORMATS = {"train_samples_per_s": "{:,.0f}", "first_step_s": "{:.2f}",
           "train_compiles": "{:d}", "decode_batched_seq_per_s": "{:,.0f}",
           "decode_loop_seq_per_s": "{:,.0f}", "gflops": "{:.1f}",
           "ceiling_gflops": "{:.0f}", "threads": "{:d}",
           "train_loss": "{:.3f}"}


@dataclasses.dataclass
class ReportConfig:
  json: str = field("", "A results file written by benchmarks.run --json.")

  def validate(self):
    return [] if self.json else ["--json is required"]


def _cell(key, values):
  if key not in FORMATS:
    return " / ".join(f"{v:,.0f}" for v in values)
  return " / ".join(FORMATS[key].format(_as(key, v)) for v in values)


def markdown(out: dict) -> str:
  m = out["machine"]
  lines = [f"Run {out['date']}: `{out['command']}`", "",
           f"- machine: {m['cpu']}, {m['cores']} cores, {m['platform']}, "
           f"Python {m['python']}",
           f"- load average (1, 5, 15 min) before {m['load_before']}, after "
           f"{m['load_after']}; {out['seconds']:.0f} s"]
  for name, w in out["workloads"].items():
    if "markdown" in w:  # a workload with its own table (sweep)
      lines += ["", f"### {name}", ""] + w["markdown"].splitlines()
      continue
    if "kind" in w:  # decoding (kinds beam, beam_toolkit: older runs)
      lines += decode.markdown_lines(name, w)
      continue
    res = w["results"]
    fws = list(res)
    threads = ("one thread per framework (--single_thread)"
               if w.get("single_thread") else "each framework's default")
    lines += ["", f"### {name} ({threads})", "",
              "- versions: " + "; ".join(
                  f"{fw}: " + ", ".join(f"{k} {v}" for k, v in
                                        res[fw]["versions"].items())
                  for fw in fws), "",
              "| median of reps | " + " | ".join(fws) + " |",
              "| --- | " + " | ".join("---:" for _ in fws) + " |"]
    for key in KEYS + ("threads", "train_loss"):
      if all(key in res[fw] for fw in fws):
        lines.append(f"| {key} | " + " | ".join(
            FORMATS[key].format(_as(key, res[fw][key])) for fw in fws) + " |")
    lines += ["", "Per repetition (in order):", "",
              "| | " + " | ".join(fws) + " |",
              "| --- | " + " | ".join("---:" for _ in fws) + " |"]
    for key in ("train_samples_per_s", "first_step_s",
                "decode_batched_seq_per_s", "decode_loop_seq_per_s"):
      if not any(key in res[fw]["reps"] for fw in fws):
        continue  # a training-only workload decodes nothing
      lines.append(f"| {key} | " + " | ".join(
          _cell(key, res[fw]["reps"].get(key, [])) for fw in fws) + " |")
    extra = [k for k in res.get("seqjax", {}).get("reps", {})
             if k.startswith("decode_loop_") and k != "decode_loop_seq_per_s"]
    for key in extra:
      lines.append(f"| seqjax {key} | " + _cell(key, res["seqjax"]["reps"][key])
                   + " |" + " |" * (len(fws) - 1))
    lines += ["", "Ratios (each repetition's seqjax over the same "
              "repetition's best peer: their median, range and values):", ""]
    lines += [_ratio_line(row) for row in w["ratios"]]
    if w.get("checks"):
      lines += ["", "The same model in every framework:", ""]
      lines += [f"- {line}" for line in w["checks"]]
    first = w["first_step_target"]
    if first.get("max_s") is not None:  # translate sets no compile target
      lines.append(f"- first_step_s: {first['seqjax_s']:.2f} s (target < "
                   f"{first['max_s']} s): "
                   f"{'met' if first['met'] else 'missed'}")
  if out.get("notes"):
    lines += [""] + [f"- note: {n}" for n in out["notes"]]
  if out.get("definitions"):
    lines += [""] + [f"- {d}" for d in out["definitions"]]
  return "\n".join(lines)


def _as(key, value):
  return int(value) if key in ("train_compiles", "threads") else value


def _ratio_line(row: dict) -> str:
  who = (f" ({row['ours']}: equal work, every pair padded to the longest as "
         "the peers)" if "ours" in row else "")
  if row["ratio"] is None:
    return f"- {row['metric']}{who}: no peer measured"
  spread = ""
  if "range" in row:
    lo, hi = row["range"]
    spread = (f" (range {lo:.2f}-{hi:.2f}; per rep " +
              " / ".join(f"{r:.2f}" for r in row["rep_ratios"]) + ")")
  return (f"- {row['metric']}{who}: {row['ratio']:.2f}x{spread} vs "
          f"{'/'.join(row['vs'])} (target >= {row['target']}x): "
          f"{'met' if row['met'] else 'missed'}")


def run(config: ReportConfig) -> str:
  try:
    with open(config.json, encoding="utf-8") as f:
      out = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise SeqjaxError(f"--json={config.json}: {e}") from e
  text = markdown(out)
  print(text)
  return text


if __name__ == "__main__":
  from experiments import common
  # common.main takes a task-like object: its name, config class and run.
  common.main(types.SimpleNamespace(name="benchmarks.report",
                                    config_cls=ReportConfig, run=run))
