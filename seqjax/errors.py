"""Errors that mean "the input is wrong", reported as a message, not a trace."""

import re


class SeqjaxError(ValueError):
  """A bad flag, file or checkpoint; the message names it."""


class ParameterError(SeqjaxError):
  """A bad value of one named parameter of a library call.

  The message names the parameter (``batch_size=400: exceeds ...``);
  ``renamed(label)`` is the same error naming ``label`` instead, so a binary
  can speak of its flag (``--batch_size=400: exceeds ...``). ``mentions``:
  the other parameters the problem names, each as ``name=`` or ``(name)``,
  which ``renamed(label, rename)`` names by ``rename(name)``.
  """

  def __init__(self, param: str, value, problem: str, label: str = "",
               mentions: tuple = ()):
    self.param, self.value, self.problem = param, value, problem
    self.label, self.mentions = label, tuple(mentions)
    super().__init__(f"{label or param}={value}: {problem}")

  def renamed(self, label: str, rename=None) -> "ParameterError":
    problem = self.problem
    if rename is not None and self.mentions:
      names = "|".join(re.escape(m) for m in self.mentions)
      problem = re.sub(rf"(?<![\w-])({names})(?=[=)])",
                       lambda m: rename(m[1]), problem)
    return type(self)(self.param, self.value, problem, label, self.mentions)
