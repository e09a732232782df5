"""Errors that mean "the input is wrong", reported as a message, not a trace."""


class SeqjaxError(ValueError):
  """A bad flag, file or checkpoint; the message names it."""


class ParameterError(SeqjaxError):
  """A bad value of one named parameter of a library call.

  The message names the parameter (``batch_size=400: exceeds ...``);
  ``renamed(label)`` is the same error naming ``label`` instead, so a binary
  can speak of its flag (``--batch_size=400: exceeds ...``).
  """

  def __init__(self, param: str, value, problem: str, label: str = ""):
    self.param, self.value, self.problem = param, value, problem
    super().__init__(f"{label or param}={value}: {problem}")

  def renamed(self, label: str) -> "ParameterError":
    return type(self)(self.param, self.value, self.problem, label)
