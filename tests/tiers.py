"""Test parameters split over the two tiers: a representative subset of a
parametrization runs in the fast tier (-m "not full"), the others carry
the ``full`` mark, so every case still runs in one tier or the other."""

import pytest


def rotating(values, group):
  """Indices of one value of each group (``group(value)`` names it): the
  pick rotates from group to group, so every position in a group is picked
  somewhere."""
  groups = {}
  for i, value in enumerate(values):
    groups.setdefault(group(value), []).append(i)
  return {members[n % len(members)]
          for n, members in enumerate(groups.values())}


def tiered(values, fast, ids, unpack=False):
  """``values`` as parameters (``unpack``: each a tuple of several
  arguments), those at the indices in ``fast`` in the fast tier, the rest
  in the full tier; ``ids(value)`` names each as before."""
  return [pytest.param(*(value if unpack else (value,)), id=ids(value),
                       marks=() if i in fast else pytest.mark.full)
          for i, value in enumerate(values)]
