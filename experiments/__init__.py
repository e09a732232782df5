"""The binaries of this repository: one task each, named to
``seqjax.task`` here so ``seqjax.task.get("reverse")`` finds them (each
imported when first asked for)."""

from seqjax import task as _task_lib

_task_lib.register_modules({name: f"{__name__}.{name}" for name in (
    "reverse", "echo", "addition", "translate", "sort")})
