"""Errors that mean "the input is wrong", reported as a message, not a trace."""


class SeqjaxError(ValueError):
  """A bad flag, file or checkpoint; the message names it."""
