"""Versioned feature sets: the named list of features that training sets, the online store,
monitoring and the next candidate runs all read (no Dagster imports).

A feature set references features by their source asset (a feature group such as
``user_behavior`` or a candidate asset such as ``dfs_candidates``) and column name.
Every source partition follows one layout: entity key columns, a ``cutoff`` column
(the state's as-of time, D+1 00:00 UTC) and the feature columns. Selection writes new
versions; a published version is immutable (``save`` refuses to overwrite a different
definition under the same version).

Stored as JSON at ``<store>/feature_sets/<name>/v<version>.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path


@dataclass(frozen=True)
class FeatureRef:
    """One feature: the asset that produces it and its column there."""

    source: str
    feature: str
    dtype: str = "float64"
    description: str = ""

    @property
    def qualified(self) -> str:
        """`source.feature`, unique across a feature set."""
        return f"{self.source}.{self.feature}"


@dataclass(frozen=True)
class FeatureSet:
    """A named, versioned list of features served for one entity."""

    name: str
    version: str
    entity_keys: tuple[str, ...]
    features: tuple[FeatureRef, ...]
    description: str = ""
    # source asset -> TTL in seconds (a training/serving row ignores older feature rows)
    ttl_seconds: dict[str, int] = field(default_factory=dict)
    # free-form provenance: metrics, importances, costs, source versions, date range
    info: dict = field(default_factory=dict)

    @property
    def sources(self) -> list[str]:
        """Source assets in first-use order."""
        return list(dict.fromkeys(f.source for f in self.features))

    def features_of(self, source: str) -> list[str]:
        """Feature columns taken from one source asset."""
        return [f.feature for f in self.features if f.source == source]

    def ttl(self, source: str) -> timedelta | None:
        """TTL of a source, if declared."""
        s = self.ttl_seconds.get(source)
        return timedelta(seconds=s) if s is not None else None

    def definition(self) -> dict:
        """The part of the set that a version pins (names, sources, dtypes, keys, TTLs)."""
        return {
            "name": self.name,
            "version": self.version,
            "entity_keys": list(self.entity_keys),
            "features": [[f.source, f.feature, f.dtype] for f in self.features],
            "ttl_seconds": dict(sorted(self.ttl_seconds.items())),
        }

    def to_json(self) -> str:
        """Serialize to JSON."""
        d = asdict(self)
        d["entity_keys"] = list(self.entity_keys)
        return json.dumps(d, indent=2, sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> "FeatureSet":
        """Parse the JSON written by `to_json`."""
        d = json.loads(text)
        return cls(
            name=d["name"],
            version=str(d["version"]),
            entity_keys=tuple(d["entity_keys"]),
            features=tuple(FeatureRef(**f) for f in d["features"]),
            description=d.get("description", ""),
            ttl_seconds={k: int(v) for k, v in (d.get("ttl_seconds") or {}).items()},
            info=d.get("info") or {},
        )


def from_groups(name: str, version: str, refs: dict[str, list[str]], description: str = "") -> FeatureSet:
    """Build a feature set from declared groups: {group name: [feature, ...]} (all features if empty)."""
    from .groups import GROUPS

    feats, ttls, keys = [], {}, None
    for group_name, names in refs.items():
        g = GROUPS[group_name]
        if keys is None:
            keys = g.keys
        elif tuple(g.keys) != tuple(keys):
            raise ValueError(f"feature set {name}: group {group_name} has keys {g.keys}, expected {keys}")
        dtypes, descr = g.feature_dtypes(), g.feature_descriptions()
        for n in names or g.feature_names():
            if n not in dtypes:
                raise ValueError(f"feature set {name}: {group_name} has no feature {n!r}")
            feats.append(FeatureRef(group_name, n, dtypes[n], descr[n]))
        ttls[group_name] = int(g.ttl.total_seconds())
    return FeatureSet(name, str(version), tuple(keys or ()), tuple(feats), description, ttls)


def path_for(store_root: str, name: str, version: str) -> Path:
    """Where a feature set version lives in the store."""
    return Path(store_root) / "feature_sets" / name / f"v{version}.json"


def save(fs: FeatureSet, store_root: str) -> Path:
    """Publish a version; refuse to change the definition of an existing version."""
    path = path_for(store_root, fs.name, fs.version)
    if path.exists():
        old = FeatureSet.from_json(path.read_text())
        if old.definition() != fs.definition():
            raise ValueError(
                f"feature set {fs.name} v{fs.version} already published with a different definition; "
                "a definition change needs a new version"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(fs.to_json())
    tmp.replace(path)
    return path


def load(store_root: str, name: str, version: str | None = None) -> FeatureSet:
    """Load a version (the highest when `version` is None); KeyError names what is missing."""
    folder = Path(store_root) / "feature_sets" / name
    if version is None:
        versions = sorted(folder.glob("v*.json"), key=lambda p: _version_key(p.stem[1:])) if folder.is_dir() else []
        if not versions:
            raise KeyError(f"unknown feature set {name!r} (nothing under {folder})")
        return FeatureSet.from_json(versions[-1].read_text())
    path = path_for(store_root, name, version)
    if not path.exists():
        raise KeyError(f"unknown feature set {name!r} version {version!r}")
    return FeatureSet.from_json(path.read_text())


def _version_key(v: str):
    return tuple(int(p) if p.isdigit() else p for p in v.split("."))


def demo_feature_set() -> FeatureSet:
    """The declared-groups baseline for users: what serving uses until selection publishes a set."""
    return from_groups(
        "user_core",
        "1",
        {
            "user_behavior": [
                "purchase_count_7d", "purchase_count_30d", "view_count_7d", "view_count_30d",
                "cart_add_count_30d", "purchase_amount_sum_30d", "conversion_rate_30d", "avg_order_value_all",
            ],
        },
        "Core user features from the declared groups (baseline until selection publishes a set).",
    )
