"""Writes docs/api.md: the API reference of seqjax, from its docstrings.

    python docs/make_api.py [--out=docs/api.md]

Every public module of the package (no name part starting with "_"), its
docstring, then its public classes and functions: those it defines itself
(or lists in ``__all__``), each with its signature and the first paragraph
of its docstring. Standard library only.
"""

import argparse
import importlib
import inspect
import re
import os
import pkgutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "seqjax"


def public_modules(package_name: str = PACKAGE) -> list[str]:
  """The importable public modules of the package, the package first."""
  package = importlib.import_module(package_name)
  names = [package_name] + [
      info.name for info in pkgutil.walk_packages(package.__path__,
                                                  package_name + ".")]
  return sorted(n for n in names
                if not any(p.startswith("_") for p in n.split(".")))


def public_members(module) -> list[tuple[str, object]]:
  """(name, object) of the module's own public classes and functions."""
  exported = getattr(module, "__all__", None)
  members = []
  for name, obj in vars(module).items():
    if not (inspect.isclass(obj) or inspect.isfunction(obj)):
      continue
    if exported is not None:
      if name in exported:
        members.append((name, obj))
    elif not name.startswith("_") and obj.__module__ == module.__name__:
      members.append((name, obj))
  return sorted(members)


def first_paragraph(obj) -> str:
  """The first paragraph of the object's own docstring; "" for none or for
  the signature a dataclass or NamedTuple writes in place of one."""
  doc = inspect.cleandoc(obj.__doc__ or "")
  if inspect.isclass(obj) and doc.startswith(obj.__name__ + "("):
    return ""
  return " ".join(doc.split("\n\n")[0].split())


def signature(obj) -> str:
  try:
    text = str(inspect.signature(obj))
  except (TypeError, ValueError):
    return "(...)"
  text = text.removesuffix(" -> None") if inspect.isclass(obj) else text
  # A default's repr may hold its address: the page must not change per run.
  return re.sub(r" at 0x[0-9a-f]+>", ">", text)


def module_section(name: str) -> list[str]:
  module = importlib.import_module(name)
  lines = [f"## `{name}`", ""]
  doc = inspect.getdoc(module)
  lines += [doc, ""] if doc else ["(no module docstring)", ""]
  for member, obj in public_members(module):
    kind = "class" if inspect.isclass(obj) else "def"
    lines.append(f"- `{kind} {member}{signature(obj)}`")
    summary = first_paragraph(obj)
    if summary:
      lines.append(f"  {summary}")
  return lines + [""]


def render(package_name: str = PACKAGE) -> str:
  modules = public_modules(package_name)
  lines = ["# seqjax API reference", "",
           "Generated from the docstrings by `python docs/make_api.py`; "
           "do not edit by hand.", "", "Modules:", ""]
  lines += [f"- [`{m}`](#{m.replace('.', '')})" for m in modules] + [""]
  for name in modules:
    lines += module_section(name)
  return "\n".join(lines).rstrip() + "\n"


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default=os.path.join(ROOT, "docs", "api.md"))
  args = parser.parse_args(argv)
  if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
  text = render()
  with open(args.out, "w", encoding="utf-8") as f:
    f.write(text)
  print(f"Wrote {args.out}: {text.count(chr(10))} lines.")


if __name__ == "__main__":
  main()
