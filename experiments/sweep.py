"""Sweeps: every configuration of a grid, each in its own workdir, resumable.

  python -m experiments.sweep --task=reverse \\
      --grid='n_units=64,128,256 batch_size=32,256' --sweep_dir=runs/sweep

Grid syntax: whitespace-separated items ``flag=value[,value...]``; every
flag is a field of the task's config (= a flag of its binary) and every
combination of values is one run (the product, in the order written). A flag
with one value is a setting shared by all runs (``epochs=2``). Values are
parsed as the flag's type: integers, floats (``1e-3``), booleans
(``true``/``false``), strings, and ``none`` for optional flags; values cannot
contain commas or whitespace. ``workdir`` and the multi-process flags are set
by the sweep, not the grid.

Each run trains in ``<sweep_dir>/runs/<flag=value,...>`` (the flags with
more than one value), in a subprocess of its own (``--isolate``, default) so
a crash or a leak stays there. Rerunning the same command resumes: a run
whose ``results.json`` was written for the same flags is skipped, a
half-finished one resumes from its latest checkpoint, a failed one is tried
again. A failing run is recorded (status ``failed`` and its error; the log
of every attempt is in ``<run>/log.txt``) and the others go on. After every
run, ``sweep.csv`` and ``sweep.md`` rank the runs by the task's declared
metric (``Task.metric_for`` the runs' flags, e.g. reverse's ``accuracy``,
addition's ``dev_exact_match``, translate's ``val_chrf``, or ``dev_chrf``
with ``--split=random``: never a test score; ``Task.maximize`` says which
way is better), then
samples/s, and with matplotlib ``sweep.png`` plots that metric against training
time. Runs go one after another (they would share the devices). The exit
status is 1 when a run failed, 2 on bad input.

``--vectorize``: runs that differ only in member flags (the seed, the
learning rate, the clipping norm, and a task's own, e.g. reverse's
``n_eval``; see ``seqjax.group_runner``) train as one vectorized group, one
compiled program for all of them (``seqjax.vectorized``); runs differing in
anything else (units, layers, vocabulary, batch size, epochs, ...) make
separate groups, run one after another, each in a subprocess of its own
(``--isolate``; its training log in ``<sweep_dir>/groups/``). Each member
writes its workdir as a lone run does and is resumed from its checkpoints by
a rerun; a member whose loss goes non-finite is stopped and recorded as
failed while the others go on. ``--group_size`` caps the members of a
group (larger groups are cut into several); a group whose members would not
fit in memory (``--memory_limit_gb``, default the devices' or host's) is
refused before any run with the estimate. A flag whose value a group cannot
train (a learning-rate schedule, model selection, a time budget) is named.

Bad input (unknown task, unknown flag, malformed grid, a value of the wrong
type, a configuration its task rejects, more devices than present) stops
the sweep before any run starts, naming the problem. Any task following
``experiments.registry``'s convention can be swept.
"""

from __future__ import annotations

import sys

from experiments import registry
from experiments.sweep_plan import GIB, plan_groups, plan_sweep
from experiments.sweep_runs import run_sweep, run_sweep_vectorized
from seqjax.errors import SeqjaxError


def main(argv=None):
  from absl import app
  from absl import flags

  flags.DEFINE_string("task", "", "Task to sweep: experiments/<task>.py, or "
                      "a dotted module (see experiments/registry.py).")
  flags.DEFINE_string("grid", "", "'flag=v1,v2 flag2=v3 ...': every "
                      "combination is a run; one value = a shared setting.")
  flags.DEFINE_string("sweep_dir", "", "Where the runs' workdirs, sweep.csv, "
                      "sweep.md and sweep.png go. Rerun to resume.")
  flags.DEFINE_bool("isolate", True, "Run each configuration in a subprocess "
                    "of its own (false: in this process, one after another).")
  flags.DEFINE_float("run_timeout", 0, "Seconds before a run is stopped and "
                     "recorded as failed (0: no limit; with --isolate).")
  flags.DEFINE_bool("dry_run", False, "Check the grid and list the runs; "
                    "run nothing.")
  flags.DEFINE_bool("vectorize", False, "Train runs that differ only in "
                    "member flags (seed, learning_rate, clip_norm, ...) as "
                    "one vectorized group (jax.vmap over stacked states).")
  flags.DEFINE_integer("group_size", 0, "--vectorize: at most this many "
                       "members a group (0: no cap).", lower_bound=0)
  flags.DEFINE_float("memory_limit_gb", 0, "--vectorize: memory a group may "
                     "use (0: the devices', or the host's available).",
                     lower_bound=0)
  FLAGS = flags.FLAGS

  def _main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    from experiments import common
    common.quiet_library_logs()  # in-process runs log as their binaries do
    try:
      if not FLAGS.task:
        raise SeqjaxError(f"--task is required; known tasks: "
                          f"{', '.join(registry.known_tasks())}")
      plan = plan_sweep(FLAGS.task, FLAGS.grid, FLAGS.sweep_dir,
                        validate_in_subprocess=FLAGS.isolate)
      print(f"Sweep of {plan.task.name}: {len(plan.runs)} run(s) under "
            f"{plan.sweep_dir}")
      groups = None
      if FLAGS.vectorize:
        groups = plan_groups(
            plan, FLAGS.group_size, int(FLAGS.memory_limit_gb * GIB),
            estimate_in_subprocess=FLAGS.isolate)
        print(f"--vectorize: {len(groups)} group(s): " + ", ".join(
            f"{g.name} ({len(g.runs)} members, ~{g.member_bytes / 2**20:.0f}"
            " MiB each)" for g in groups))
      elif FLAGS.group_size or FLAGS.memory_limit_gb:
        raise SeqjaxError("--group_size and --memory_limit_gb need "
                          "--vectorize")
      if FLAGS.dry_run:
        for run in plan.runs:
          print(f"  {run.name}: {run.assignment}")
        return
      if groups is not None:
        rows = run_sweep_vectorized(plan, groups, isolate=FLAGS.isolate,
                                    run_timeout=FLAGS.run_timeout or None)
      else:
        rows = run_sweep(plan, isolate=FLAGS.isolate,
                         run_timeout=FLAGS.run_timeout or None)
    except SeqjaxError as e:
      print(f"Error: {e}", file=sys.stderr)
      sys.exit(2)
    failed = sum(r["status"] != "done" for r in rows)
    print(f"Wrote {plan.sweep_dir}/sweep.csv and sweep.md; {len(rows) - failed}"
          f" done, {failed} failed.")
    sys.exit(1 if failed else 0)

  app.run(_main, argv=argv)

if __name__ == "__main__":
  main()
