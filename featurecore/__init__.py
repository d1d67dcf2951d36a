"""Pure computation for the feature factory: no Dagster imports live in this package.

Batch assets, streaming updaters and online lookups all call the functions here, so
the three paths cannot drift apart.
"""
