"""Chinese script conversion (simplified / traditional) with OpenCC.

The Tatoeba pairs mix simplified and traditional Chinese, so a model trained
on them writes a mix. ``converter(script)`` maps a text to one script with
OpenCC (the ``opencc`` package: the project's C++ library with its own
phrase and character tables): ``t2s`` for simplified, ``s2t`` for
traditional. Text already in the target script passes through unchanged.
"""

from __future__ import annotations

import functools
from typing import Callable

from seqjax.errors import ParameterError, SeqjaxError

AS_IS = "as_is"
SCRIPTS = (AS_IS, "simplified", "traditional")
OPENCC_CONFIGS = {"simplified": "t2s.json", "traditional": "s2t.json"}
INSTALL = "pip install opencc (the OpenCC project's official wheels)"


class ConverterMissingError(SeqjaxError):
  """OpenCC is not installed."""


def available() -> bool:
  """Whether OpenCC can be imported."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  return importlib.util.find_spec("opencc") is not None


@functools.lru_cache(maxsize=None)
def converter(script: str) -> Callable[[str], str]:
  """A function mapping a text to ``script`` (``as_is``: the identity).
  Raises ParameterError for an unknown script, ConverterMissingError
  without OpenCC."""
  if script not in SCRIPTS:
    raise ParameterError("script", script, f"must be one of "
                         f"{', '.join(SCRIPTS)}")
  if script == AS_IS:
    return lambda text: text
  try:
    import opencc  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ConverterMissingError(f"converting Chinese to {script} needs "
                                f"OpenCC: {INSTALL}") from e
  return opencc.OpenCC(OPENCC_CONFIGS[script]).convert


def convert_targets(pairs: list, script: str) -> list[tuple[str, str]]:
  """``pairs`` with each target converted to ``script``."""
  if script == AS_IS:
    return list(pairs)
  convert = converter(script)
  return [(s, convert(t)) for s, t in pairs]
