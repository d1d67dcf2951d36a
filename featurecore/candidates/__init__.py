"""Automated candidate features: Featuretools DFS, tsfresh, interactions, encodings, reduction, costs.

Pure computation (no Dagster imports). The shard functions run as Dask tasks that read
the offline store and write their own Parquet part; the Dagster assets in
``feature_assets/candidates.py`` only plan shards and collect small statistics.
"""
