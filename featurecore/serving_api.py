"""HTTP lookup service for the online store (FastAPI; no Dagster).

Start it with ``make serve`` (uvicorn on http://127.0.0.1:8000) or
``python -m featurecore.serving_api --host 127.0.0.1 --port 8000 [--store-url URL]``.
The store is ``--store-url``, else ``$ONLINE_STORE_URL``, else ``$REDIS_URL``, else the
SQLite file inside the offline store root (see ``online.default_store_url``).

Endpoints (every answer is JSON):

- ``GET /health``: ``{"status": "ok"}``, or 503 when the store cannot be reached.
- ``GET /feature-sets``: the served sets (name, version, keys, feature count, batch day).
- ``GET /feature-sets/{name}?version=``: a set's definition (features, dtypes, TTLs).
- ``GET /features/{name}?user_id=u1[&version=1][&at=2026-10-31T00:00:00Z]``: one entity
  (its key columns as query parameters). 404 when the entity has no value at all.
- ``POST /features/{name}`` with ``{"entities": [{"user_id": "u1"}, "u2", ...],
  "version": "1", "at": "..."}``: up to ``max_batch`` entities in one store round trip;
  an entity without any value is answered with ``found: false`` and status ``missing``
  (one unknown id does not fail the other 999).

The answer of a lookup: ``features`` (qualified names, set order), ``sources``, and per
entity ``values``, ``statuses`` (``present`` / ``missing`` / ``expired``, per feature) and
``rows`` (per source, in ``sources`` order: the served row's ``[cutoff, as_of, origin]``,
or null).

Errors: ``{"error": "<what is wrong>", "status": <code>}`` with 404 (unknown feature
set, version or entity), 413 (too many entities), 422 (malformed body, wrong or missing
key columns, unparsable ``at``), 503 (store down: answered within the store timeouts).
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from .online import BadEntity, OnlineStore, StoreUnavailable, UnknownFeatureSet, default_store_url, open_store, redact, to_ns

MAX_BATCH = 10_000
_RESERVED = {"version", "at"}


class LookupBody(BaseModel):
    """Body of a batch lookup."""

    model_config = ConfigDict(extra="forbid")
    entities: list[dict[str, str | int] | str | int] = Field(min_length=1)
    version: str | None = None
    at: str | None = None


class _ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status)


def _json(payload: Any) -> Response:
    # orjson directly: FastAPI's encoder walks every value and costs more than the store lookup.
    # JSON has no Infinity: a non-finite value is sent as null.
    return Response(orjson.dumps(payload), media_type="application/json")


def _parse_at(at: str | None) -> int | None:
    if at is None:
        return None
    try:
        return to_ns(at)
    except (ValueError, TypeError) as e:
        raise _ApiError(422, f"cannot parse at={at!r} as an ISO 8601 time: {e}") from None


def create_app(url: str | None = None, *, max_batch: int = MAX_BATCH) -> FastAPI:
    """The FastAPI app over the online store at ``url`` (opened lazily, so the app starts even if the store is down)."""
    if url is None:
        from .config import load_source_config

        url = default_store_url(load_source_config().store_root)
    app = FastAPI(title="Feature serving", version="1",
                  description="Feature vectors with per-feature status from the online store.")
    holder: dict[str, OnlineStore] = {}

    def store() -> OnlineStore:
        if "s" not in holder:
            holder["s"] = open_store(url, readonly=True)
        return holder["s"]

    app.state.store_url = url

    @app.exception_handler(_ApiError)
    async def _api_error(_: Request, e: _ApiError):
        return _error(e.status, e.message)

    @app.exception_handler(UnknownFeatureSet)
    async def _unknown(_: Request, e: UnknownFeatureSet):
        return _error(404, str(e))

    @app.exception_handler(BadEntity)
    async def _bad_entity(_: Request, e: BadEntity):
        return _error(422, str(e))

    @app.exception_handler(StoreUnavailable)
    async def _down(_: Request, e: StoreUnavailable):
        return _error(503, f"online store unavailable: {e}")

    @app.exception_handler(RequestValidationError)
    async def _malformed(_: Request, e: RequestValidationError):
        parts = []
        for err in e.errors():
            if err.get("type") == "json_invalid":
                parts.append(f"body is not valid JSON ({(err.get('ctx') or {}).get('error', err.get('msg'))})")
                continue
            loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
            parts.append(f"{loc or 'body'}: {err.get('msg')}")
        return _error(422, "malformed request: " + "; ".join(parts[:5]) +
                      ' (expected {"entities": [{"<key>": "<value>"}, ...], "version": "...", "at": "..."})')

    @app.get("/health")
    def health():
        """200 when the store answers, 503 otherwise."""
        store().ping()
        return {"status": "ok", "store": redact(url)}

    @app.get("/feature-sets")
    def feature_sets():
        """The served feature sets."""
        return {"feature_sets": store().served_sets()}

    @app.get("/feature-sets/{name}")
    def feature_set(name: str, version: str | None = None):
        """A served set's definition."""
        fs = store().feature_set(name, version)
        return {
            "name": fs.name, "version": fs.version, "entity_keys": list(fs.entity_keys),
            "description": fs.description, "ttl_seconds": fs.ttl_seconds,
            "features": [{"name": f.qualified, "dtype": f.dtype, "description": f.description} for f in fs.features],
        }

    @app.get("/features/{name}")
    def lookup_one(name: str, request: Request, version: str | None = None, at: str | None = None):
        """One entity, its key columns as query parameters; 404 when it has no value."""
        s = store()
        fs = s.feature_set(name, version)
        keys = {k: v for k, v in request.query_params.items() if k not in _RESERVED}
        if set(keys) != set(fs.entity_keys):
            raise _ApiError(422, f"pass the entity key(s) {list(fs.entity_keys)} as query parameters, got {sorted(keys)}")
        res = s.lookup(fs, [keys], at=_parse_at(at))
        if not res.found(0):
            shown = ", ".join(f"{k}={v}" for k, v in keys.items())
            raise _ApiError(404, f"unknown entity {shown}: no value in feature set {fs.name} v{fs.version}")
        return _json(res.to_dict())

    @app.post("/features/{name}")
    def lookup_many(name: str, body: LookupBody):
        """A batch of entities, one store round trip."""
        if len(body.entities) > max_batch:
            raise _ApiError(413, f"{len(body.entities)} entities in one request; at most {max_batch}")
        s = store()
        fs = s.feature_set(name, body.version)
        res = s.lookup(fs, body.entities, at=_parse_at(body.at))
        out = res.to_dict()
        out["missing_entities"] = sum(1 for r in out["results"] if not r["found"])
        return _json(out)

    return app


# `uvicorn featurecore.serving_api:app` serves the default store.
app = create_app()


def main(argv: list[str] | None = None) -> None:
    """CLI: run the service with uvicorn."""
    import uvicorn

    ap = argparse.ArgumentParser(prog="python -m featurecore.serving_api", description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--store-url", help="sqlite:///<path> or redis://host:port/db (default: see module doc)")
    ap.add_argument("--max-batch", type=int, default=MAX_BATCH)
    a = ap.parse_args(argv)
    application = create_app(a.store_url, max_batch=a.max_batch)
    print(f"serving {redact(application.state.store_url)} on http://{a.host}:{a.port} (docs: /docs)", flush=True)
    uvicorn.run(application, host=a.host, port=a.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
