"""Featuretools primitives this project swaps in for slow built-ins: same names, same values, vectorised.

Featuretools applies an aggregation primitive's function through pandas'
``groupby(...).agg``. A Python function there runs once per group; a string naming a
groupby method runs once per column, in Cython. ``PercentTrue`` returns a Python
function (``s.fillna(False).mean()``), and on the default DFS configuration it is
applied per *session*: about half of ``calculate_feature_matrix``'s time went to those
calls. ``VectorPercentTrue`` computes the same number as a groupby method: the count of
True over the group's size, so a null adds to the denominator exactly as
``fillna(False)`` does, and ``k / n`` is the float that ``mean`` of ``k`` ones and
``n - k`` zeros gives. Its ``name`` is ``percent_true``, so feature names do not
change. Saved definitions record this class; Featuretools imports this module when it
is itself imported (the ``featuretools_initialize`` entry point in ``pyproject.toml``),
so ``ft.load_features`` finds the class in any process where the package is installed.
"""

from __future__ import annotations

import pandas as pd
from featuretools.primitives import PercentTrue
from pandas.core.groupby.generic import SeriesGroupBy

#: the SeriesGroupBy method pandas calls for VectorPercentTrue (a string keeps it in Cython)
GROUPBY_METHOD = "featurecore_percent_true"


def _percent_true(self: SeriesGroupBy) -> pd.Series:
    """Share of True values per group, nulls counted as False (Featuretools' PercentTrue)."""
    trues = self.sum()  # skips nulls; True counts 1
    return trues.astype("float64") / self.size().astype("float64")


if not hasattr(SeriesGroupBy, GROUPBY_METHOD):
    # an added method, not a replaced one: pandas' own behaviour is untouched
    setattr(SeriesGroupBy, GROUPBY_METHOD, _percent_true)


class VectorPercentTrue(PercentTrue):
    """Featuretools' ``PercentTrue`` (same name and value), computed per column instead of per group."""

    def get_function(self):
        """The name of the added SeriesGroupBy method, so pandas runs it per column in Cython."""
        return GROUPBY_METHOD


#: DFS primitive names this project resolves to its own classes
REPLACEMENTS = {"percent_true": VectorPercentTrue}


def register() -> None:
    """Featuretools' ``featuretools_initialize`` hook: importing this module defined the primitives."""


def agg_primitives(names) -> list:
    """The aggregation primitives for ``ft.dfs``: names, with the vectorised replacements swapped in."""
    return [REPLACEMENTS.get(n, n) if isinstance(n, str) else n for n in names]
