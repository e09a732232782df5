"""Averages the parameters of a run's checkpoints into a new workdir.

  python -m experiments.average --from=runs/cmn --to=runs/cmn-avg --last=3
  python -m experiments.average --from=runs/cmn --to=runs/cmn-avg5 --best=5

``--last=N``: the N newest checkpoints of each ``--from`` workdir (a run
keeps 3 by default: ``--checkpoint_every`` and epoch ends save them);
``--best=N``: the N best epochs by the run's select metric, which the run
kept in ``<workdir>/best`` with ``--keep_best_n=N`` (or more). ``--from``
repeats: the checkpoints of several runs of one model (same settings,
shapes and vocab.json; anything else is refused before any work, naming
the checkpoint or workdir).

``--to`` is a new model workdir (vocab.json, the averaged checkpoint at the
newest step averaged, results.json and average.json naming the checkpoints
that went in with their dev scores): ``--translate``, ``--eval_only`` and
``seqjax.translation.load_translator`` work on it. The ``--from`` workdirs
are only read. The library is ``seqjax.averaging``.
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags

from seqjax import averaging
from seqjax.errors import SeqjaxError

FROM = flags.DEFINE_multi_string("from", None, "A trained workdir whose "
                                 "checkpoints are averaged; repeatable.")
TO = flags.DEFINE_string("to", None, "The new workdir the average is "
                         "written to (absent or empty).")
LAST = flags.DEFINE_integer("last", 0, "Average the N newest checkpoints of "
                            "each --from.", lower_bound=0)
BEST = flags.DEFINE_integer("best", 0, "Average the N best checkpoints of "
                            "each --from (kept with --keep_best_n).",
                            lower_bound=0)


def flag_errors(sources, to, last: int, best: int) -> list[str]:
  errors = []
  if not sources:
    errors.append("--from (a trained workdir) is needed")
  if not to:
    errors.append("--to (the new workdir) is needed")
  if bool(last) == bool(best):
    errors.append(f"exactly one of --last and --best must be set (got "
                  f"--last={last} --best={best})")
  return errors


def run(sources: list[str], to: str, last: int = 0, best: int = 0) -> dict:
  """Averages and prints what went in; -> the record (average.json)."""
  pick = averaging.last_checkpoints if last else averaging.best_checkpoints
  n = last or best
  checkpoints = [c for workdir in sources for c in pick(workdir, n)]
  record = averaging.average(checkpoints, to,
                             f"{'last' if last else 'best'} {n}")
  for c in checkpoints:
    score = "" if c.value is None else f" ({c.metric} {c.value:.4f})"
    print(f"  {c.path}{score}")
  print(f"Averaged {len(checkpoints)} checkpoints into {to} (step "
        f"{record['step']}).")
  return record


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  errors = flag_errors(FROM.value, TO.value, LAST.value, BEST.value)
  if errors:
    print("Bad flags:\n  " + "\n  ".join(errors), file=sys.stderr)
    sys.exit(2)
  try:
    run(FROM.value, TO.value, LAST.value, BEST.value)
  except SeqjaxError as e:
    print(f"Error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
