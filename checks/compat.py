"""Backward compatibility of published feature sets with the current declarations (no Dagster).

A published feature-set version (``featurecore.feature_sets``) must stay producible:
every referenced source still exists and has the same entity keys, every feature is
still produced, with a compatible type, and with the same definition. A definition
change needs a new group version *and* a new feature-set version; the check tells the
two cases apart:

- the fingerprint changed while the group version did not: a **silent** change (bump the
  group version, publish a new feature-set version);
- the group version changed since publication: the published version can no longer be
  produced as published (publish a new feature-set version).

Fingerprints (`checks.layout.feature_fingerprints`) hash what determines a feature's
values (kind, window, filter, column, parameters, dtype, inputs of ratios), not its name
or description. Publishers record them with `with_provenance` (``info["source_versions"]``
and ``info["definitions"]``), taking the layouts from `store_layouts` (groups, candidate
assets and static snapshots as the store holds them); for a version published without
them the check compares dtypes and descriptions only and says so.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Mapping

from featurecore.feature_sets import FeatureSet

from .layout import FeatureInfo, FeatureLayout, layout_of_frame, layout_of_group

_NUMERIC_WIDENING = {
    "float64": {"float64", "float32", "int64", "int32", "int16", "int8", "bool"},
    "float32": {"float32", "int16", "int8", "bool"},
    "int64": {"int64", "int32", "int16", "int8", "bool"},
}


def _version(v) -> str:
    """'group v1', 'v1' and '1' are the same version."""
    return re.sub(r"^(group\s+)?v", "", str(v).strip())


def compatible(published: str, current: str) -> bool:
    """True when values of `current` dtype can be served where `published` was promised."""
    if published == current:
        return True
    return current in _NUMERIC_WIDENING.get(published, set())


def provenance(fs: FeatureSet, layouts: Mapping[str, FeatureLayout]) -> dict:
    """What a publisher records so definition changes can be detected later."""
    return {
        "source_versions": {s: layouts[s].version for s in fs.sources if s in layouts},
        "definitions": {
            f.qualified: layouts[f.source].get(f.feature).fingerprint
            for f in fs.features
            if f.source in layouts and f.feature in layouts[f.source].names()
        },
    }


def with_provenance(fs: FeatureSet, layouts: Mapping[str, FeatureLayout]) -> FeatureSet:
    """A copy of `fs` whose info carries the current source versions and feature fingerprints."""
    return replace(fs, info={**fs.info, **provenance(fs, layouts)})


STATIC_VERSION = "snapshot"


def store_layouts(store_root: str, sources: Iterable[str], keys: Iterable[str]) -> dict[str, FeatureLayout]:
    """Current layouts of feature-set sources as the store holds them (sources it does not hold are left out).

    Declared groups: their declaration (``layout_of_group``). Day-partitioned assets without
    a declaration (candidate assets): names and dtypes of the newest partition, version
    "1" and the dtype as fingerprint, as the ``feature_set_compat`` check builds them from
    profiles, so a publisher and the check agree. Static snapshots (``users``,
    ``users_wide``): the served dtype (dates become float64 days, as the training join
    serves them) and the stored Arrow type as fingerprint, so a retyped attribute is caught.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from featurecore.groups import GROUPS
    from featurecore.training import SNAPSHOT, source_days

    keys = tuple(keys)
    out: dict[str, FeatureLayout] = {}
    for src in sources:
        if src in GROUPS:
            out[src] = layout_of_group(GROUPS[src])
            continue
        snap = Path(store_root) / src / SNAPSHOT
        if snap.is_file():
            feats = []
            for f in pq.read_schema(snap):
                if f.name in keys:
                    continue
                t = f.type
                served = "float64" if (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
                                       or pa.types.is_date(t) or pa.types.is_timestamp(t)) else "object"
                feats.append(FeatureInfo(f.name, served, fingerprint=str(t)))
            out[src] = FeatureLayout(src, keys, tuple(feats), STATIC_VERSION, strict=False)
            continue
        days = source_days(store_root, src)
        files = sorted((Path(store_root) / src / f"date={days[-1]}").glob("*.parquet")) if days else []
        if files:
            empty = pq.read_schema(files[0]).empty_table().to_pandas()
            out[src] = layout_of_frame(src, keys, empty, guess_kinds=False)
    return out


def compat_findings(fs: FeatureSet, layouts: Mapping[str, FeatureLayout], sources: list[str] | None = None) -> list[dict]:
    """Problems that keep a published version from being produced (optionally only for some sources)."""
    out = []
    tag = f"feature set {fs.name} v{fs.version}"
    versions = fs.info.get("source_versions") or {}
    prints = fs.info.get("definitions") or {}
    for src in fs.sources:
        if sources is not None and src not in sources:
            continue
        lay = layouts.get(src)
        if lay is None:
            out.append({"source": src, "feature": None, "problem": "missing source",
                        "message": f"{tag}: source {src} is no longer declared"})
            continue
        if tuple(lay.keys) != tuple(fs.entity_keys):
            out.append({"source": src, "feature": None, "problem": "keys",
                        "message": f"{tag}: {src} keys are {list(lay.keys)}, the set was published with {list(fs.entity_keys)}"})
        v_pub, v_now = versions.get(src), lay.version
        for ref in fs.features:
            if ref.source != src:
                continue
            q = ref.qualified
            if ref.feature not in lay.names():
                out.append({"source": src, "feature": ref.feature, "problem": "missing feature",
                            "message": f"{tag}: {q} is no longer produced by {src} v{v_now}"})
                continue
            info = lay.get(ref.feature)
            if not compatible(ref.dtype, info.dtype):
                out.append({"source": src, "feature": ref.feature, "problem": "type",
                            "message": f"{tag}: {q} was published as {ref.dtype}, {src} v{v_now} now produces {info.dtype}"})
            if q in prints and info.fingerprint and prints[q] != info.fingerprint:
                if v_pub is not None and _version(v_pub) == _version(v_now):
                    out.append({"source": src, "feature": ref.feature, "problem": "silent definition change",
                                "message": f"{tag}: definition of {q} changed (fingerprint {prints[q]} -> "
                                           f"{info.fingerprint}) while {src} stays at version {v_now}: bump the "
                                           "group version and publish a new feature-set version"})
                else:
                    out.append({"source": src, "feature": ref.feature, "problem": "definition changed",
                                "message": f"{tag}: {q} was published from {src} v{_version(v_pub)}; its definition changed "
                                           f"in v{v_now} (fingerprint {prints[q]} -> {info.fingerprint}): publish a "
                                           "new feature-set version"})
            elif q not in prints and ref.description and info.description and ref.description != info.description:
                out.append({"source": src, "feature": ref.feature, "problem": "description changed",
                            "message": f"{tag}: {q} has no recorded fingerprint and its description changed "
                                       f"({ref.description!r} -> {info.description!r}): definition may have changed"})
    return out


def summarize(findings: list[dict]) -> str:
    """One line for a check description."""
    if not findings:
        return "every published feature set can be produced as published"
    kinds: dict[str, int] = {}
    for f in findings:
        kinds[f["problem"]] = kinds.get(f["problem"], 0) + 1
    return f"{len(findings)} problem(s) ({', '.join(f'{v} {k}' for k, v in kinds.items())}); first: {findings[0]['message']}"

