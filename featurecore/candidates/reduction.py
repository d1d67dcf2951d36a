"""Dimensionality reduction of candidate blocks: feature hashing of high-cardinality
categorical histories and incremental PCA fitted on a sample.

PCA is fitted once per configuration version on a sample (median imputation, then
standardisation, then ``IncrementalPCA``) and saved as ``pca.npz`` beside the asset's
other artifacts, so every day and every shard projects with the same components.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .common import clean_numeric


def fit_pca(sample: pd.DataFrame, n_components: int, batch_size: int = 512) -> dict:
    """Fit median-impute + standardise + IncrementalPCA on a sample; returns the fitted parameters."""
    from sklearn.decomposition import IncrementalPCA

    x = clean_numeric(sample.to_numpy(dtype="float64", na_value=np.nan))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: median NaN, set to 0 below
        med = np.nanmedian(x, axis=0) if len(x) else np.zeros(x.shape[1])
    med = np.where(np.isnan(med), 0.0, med)
    x = np.where(np.isnan(x), med, x)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    keep = scale > 1e-12  # constant columns carry no variance and would divide by zero
    cols = [c for c, k in zip(sample.columns, keep) if k]
    z = (x[:, keep] - mean[keep]) / scale[keep]
    k = int(min(n_components, z.shape[0], z.shape[1]))
    if k < 1:
        raise ValueError(f"PCA: nothing to fit (sample {z.shape[0]} rows x {z.shape[1]} non-constant columns)")
    # IncrementalPCA needs every batch to hold at least n_components rows.
    ipca = IncrementalPCA(n_components=k, batch_size=max(batch_size, k))
    ipca.fit(z)
    return {
        "columns": np.array(cols, dtype=object),
        "median": med[keep],
        "mean": mean[keep],
        "scale": scale[keep],
        "components": ipca.components_,
        "explained_variance_ratio": ipca.explained_variance_ratio_,
        "sample_rows": np.array(z.shape[0]),
    }


def save_pca(path: Path, model: dict) -> Path:
    """Save fitted PCA parameters as an .npz file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{k: (v.astype(str) if k == "columns" else v) for k, v in model.items()})
    return path


def load_pca(path: str | Path) -> dict:
    """Load PCA parameters saved by `save_pca`."""
    with np.load(path, allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    out["columns"] = [str(c) for c in out["columns"]]
    return out


def apply_pca(df: pd.DataFrame, model: dict, prefix: str) -> pd.DataFrame:
    """Project rows onto the fitted components: columns `<prefix>_pc00`, ... (missing inputs -> median)."""
    cols = list(model["columns"])
    x = clean_numeric(df.reindex(columns=cols).to_numpy(dtype="float64", na_value=np.nan))
    x = np.where(np.isnan(x), model["median"], x)
    z = (x - model["mean"]) / model["scale"]
    proj = z @ model["components"].T
    return pd.DataFrame(proj, columns=[f"{prefix}_pc{i:02d}" for i in range(proj.shape[1])], index=df.index)


def hash_bags(entity: pd.Series, tokens: pd.Series, entities: list, n_features: int, prefix: str) -> pd.DataFrame:
    """Hashed bag-of-tokens counts per entity (sklearn FeatureHasher): `<prefix>_00..`, rows in `entities` order."""
    from sklearn.feature_extraction import FeatureHasher

    ok = tokens.notna()
    counts = pd.DataFrame({"e": entity[ok].to_numpy(), "t": tokens[ok].astype(str).to_numpy()}).value_counts().reset_index()
    per = {e: dict(zip(g["t"], g["count"].astype(float))) for e, g in counts.groupby("e", sort=False)}
    # alternate_sign=False keeps every column a non-negative count of the tokens hashed to it.
    hasher = FeatureHasher(n_features=n_features, input_type="dict", alternate_sign=False)
    mat = hasher.transform([per.get(e, {}) for e in entities]).toarray()
    return pd.DataFrame(mat, columns=[f"{prefix}_{i:02d}" for i in range(n_features)])
