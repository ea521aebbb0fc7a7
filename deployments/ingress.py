"""The HTTP front door: the v1 API of ../shared/API.md on FastAPI, served by Ray Serve.

The ingress authenticates, bounds and decodes requests, writes the bank catalog, and fans
work out to the signal deployments (hashing, embedding) and to every searcher slot of every
signal type; it merges their hits, applies thresholds and attaches bank labels and metadata.
Blocking work (object storage, the catalog) runs in threads so the event loop keeps serving.
"""


import asyncio
import logging
import os
import time
from typing import Any

import ray
from fastapi import FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema
from ray import serve
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from mediamatch.indexing import jobs
from mediamatch.platform.auth import Authenticator, Principal, RateLimiter
from mediamatch.platform.catalog import Catalog, Entry
from mediamatch.platform.errors import (
    InvalidInput,
    NotFound,
    MediamatchError,
    NotReady,
    StorageError,
    TooLarge,
    UnsupportedContentType,
)
from mediamatch.platform.media import CONTENT_TYPES, json_object, sniff_content_type
from mediamatch.platform.settings import Settings
from mediamatch.platform.signals import Signal, SignalType, configure_signal_types, get_signal_type
from mediamatch.platform.storage import ObjectStore
from mediamatch.platform.versions import IndexVersions

from . import metrics
from .models import (
    BankCreate,
    BankList,
    BankOut,
    BankPatch,
    EntryJSON,
    EntryList,
    EntryOut,
    EntryPatch,
    ErrorBody,
    HashJSON,
    HashResult,
    Match,
    MatchJSON,
    MatchResult,
    PostPart,
    ReindexAccepted,
    ReindexRequest,
    RollbackRequest,
    SignalTypeOut,
)

log = logging.getLogger("ray.serve")

app = FastAPI(
    title="mediamatch",
    version="1",
    description="Find every known item that a photo, video, audio clip, text or post copies, in banks of known content.",
    responses={code: {"model": ErrorBody} for code in (400, 401, 403, 404, 413, 415, 422, 503)},
)


# -- errors in the API's shape --------------------------------------------------------------------
def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


@app.exception_handler(MediamatchError)
async def _mediamatch_error(request: Request, exc: MediamatchError) -> JSONResponse:
    response = error_response(exc.status, exc.code, str(exc))
    if getattr(exc, "retry_after", None):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


@app.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return validation_response(exc.errors())


def validation_response(errors: list[dict]) -> JSONResponse:
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        return error_response(400, "malformed_request", f"the body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}")
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    return error_response(422, "invalid_request", f"{where + ': ' if where else ''}{first['msg']}")


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    codes = {404: "not_found", 405: "method_not_allowed"}
    return error_response(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail))


@app.exception_handler(ray.exceptions.RayActorError)
async def _replica_lost(request: Request, exc: Exception) -> JSONResponse:
    """A replica died under this request: Serve is replacing it, so the caller should retry."""
    log.warning("a replica died under %s %s: %s", request.method, request.url.path, type(exc).__name__)
    response = error_response(503, "unavailable", "a part of the service restarted while answering; retry the request")
    response.headers["Retry-After"] = "1"
    return response


@app.exception_handler(Exception)
async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(500, "internal", f"internal error ({type(exc).__name__}); it has been logged")


@app.middleware("http")
async def _measure(request: Request, call_next):
    started = time.perf_counter()
    response = await call_next(request)
    route = request.scope.get("route")
    metrics.observe_request(getattr(route, "path", "unmatched"), request.method, response.status_code, time.perf_counter() - started)
    return response


# -- request bodies that may be multipart or JSON -------------------------------------------------
FORM_FIELDS = {
    "file": {"type": "string", "format": "binary"},
    "content_type": {"type": "string", "enum": list(CONTENT_TYPES)},
    "metadata": {"type": "string", "description": "a JSON object"},
    "banks": {"type": "string", "description": "comma-separated bank names"},
    "signal_types": {"type": "string", "description": "comma-separated signal type names"},
}


def either_body(model: type[BaseModel], fields: tuple[str, ...]) -> dict:
    """OpenAPI for a body that is multipart (a `file` part and form fields) or JSON (`model`)."""
    form = {"type": "object", "required": ["file"], "properties": {f: FORM_FIELDS[f] for f in fields}}
    json_schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": form}, "application/json": {"schema": json_schema}}}}


EITHER_MODELS = (EntryJSON, HashJSON, MatchJSON, ReindexRequest)


def _openapi() -> dict:
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        _, defs = models_json_schema([(m, "validation") for m in EITHER_MODELS], ref_template="#/components/schemas/{model}")
        schema.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
        app.openapi_schema = schema
    return app.openapi_schema


app.openapi = _openapi


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing more than `limit` bytes (whether or not Content-Length says so)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"the body is {declared} bytes, over the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # Starlette's cache: form() parses these bytes instead of the spent stream
    return body


class Upload(BaseModel):
    data: bytes
    filename: str
    fields: dict[str, str]


async def read_request(request: Request, model: type[BaseModel] | None, limit: int, optional: bool = False) -> Upload | BaseModel | None:
    """A multipart upload (`file` part + fields) or a JSON body validated by `model`."""
    body = await read_body(request, limit)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        async with request.form(max_files=1, max_fields=16) as form:
            file = form.get("file")
            if not isinstance(file, UploadFile):
                raise InvalidInput("the multipart body needs a part named 'file' holding the media")
            data = await file.read()
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
            return Upload(data=data, filename=file.filename or "", fields=fields)
    if not body.strip() and optional:
        return None
    if ctype not in ("application/json", ""):
        raise UnsupportedContentType(f"send application/json or multipart/form-data, not {ctype!r}")
    if model is None:
        raise UnsupportedContentType("this endpoint takes a multipart upload")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


def csv_field(fields: dict[str, str], name: str) -> list[str] | None:
    value = fields.get(name)
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def entry_out(entry: Entry) -> EntryOut:
    return EntryOut(**entry.model_dump(exclude={"media"}))


# -- the deployment -------------------------------------------------------------------------------
@serve.deployment
@serve.ingress(app)
class Ingress:
    def __init__(self, settings: dict[str, Any], computers: dict[str, Any], searchers: dict[str, list[Any]]):
        self.settings = Settings(**settings)
        configure_signal_types(self.settings)  # thresholds of model signals come with their model
        self.store = ObjectStore.from_settings(self.settings)
        self.catalog = Catalog(self.store)
        self.catalog_error: str | None = None
        self.follow_catalog()  # load it now (a store that is down only delays readiness)
        self.auth = Authenticator(self.settings.tokens)
        self.limiter = RateLimiter()
        self.computers = computers  # "hasher" / "embed-<signal type>" -> handle
        self.searchers = searchers  # signal type -> one handle per slot
        self.served = [get_signal_type(name) for name in searchers]
        self.jobs: dict[str, ray.ObjectRef] = {}
        if self.auth.anonymous:
            log.warning("no tokens configured: every loopback client may do anything, others are refused")

    # -- helpers ---------------------------------------------------------------------------------
    def follow_catalog(self) -> int:
        """Catch up with the catalog; when the store is down, go on with what is loaded (logged,
        and /readyz says so): matching keeps answering, writes fail with 503."""
        try:
            seq = self.catalog.refresh()
            self.catalog_error = None
            return seq
        except StorageError as exc:
            self.catalog_error = str(exc)
            log.warning("catalog not refreshed, answering from commit %d: %s", self.catalog.seq, exc)
            return self.catalog.seq

    def principal(self, request: Request) -> Principal:
        """The calling team (401 without a known token), within its rate limit (429)."""
        who = self.auth.authenticate(request.headers.get("authorization"), request.client.host if request.client else None)
        self.limiter.check(who)
        return who

    async def run(self, fn, *args, **kwargs):
        return await asyncio.to_thread(fn, *args, **kwargs)

    def bank_out(self, bank) -> BankOut:
        return BankOut(**bank.model_dump())

    def threshold(self, signal_type: SignalType, bank: str | None = None) -> float:
        override = self.catalog.banks.get(bank, {}).get("thresholds", {}).get(signal_type.name) if bank else None
        if override is not None:
            return float(override)
        return float(self.settings.thresholds.get(signal_type.name, signal_type.default_threshold))

    def wanted_types(self, content_type: str, requested: list[str] | None) -> list[SignalType]:
        if requested:
            for name in requested:
                get_signal_type(name)
        return [s for s in self.served if content_type in s.content_types and (not requested or s.name in requested)]

    async def compute(self, content: bytes | str, content_type: str, types: list[SignalType], query: bool = False) -> dict[str, Signal]:
        """The signals of one item (`query`: one to match), from the hasher and the model
        deployments in parallel."""
        names = {"hasher" if not s.needs_model else f"embed-{s.name}" for s in types}
        results = await asyncio.gather(*(self.computers[n].compute.remote((content, content_type, query)) for n in sorted(names)))
        signals: dict[str, Signal] = {}
        for result in results:
            if isinstance(result, MediamatchError):
                raise result
            signals.update(result)
        return {s.name: signals[s.name] for s in types if s.name in signals}

    # -- operations -------------------------------------------------------------------------------
    @app.get("/healthz", tags=["operations"])
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    async def readyz(self) -> dict:
        try:
            statuses = await asyncio.wait_for(self.searcher_statuses(), timeout=5)
            await asyncio.wait_for(asyncio.gather(*(h.ready.remote() for h in self.computers.values())), timeout=5)
        except Exception as exc:
            raise NotReady(f"index searchers are not ready: {type(exc).__name__}: {exc}") from None
        waiting = [s["reason"] for s in statuses.values() if not s["ready"]]
        if self.catalog.seq == 0 and self.catalog_error:
            waiting.append(f"the bank catalog is not loaded: {self.catalog_error}")
        if waiting:
            raise NotReady("; ".join(waiting))
        return {"ready": True, "indexes": {name: {"version": s["version"], "count": s["count"]} for name, s in statuses.items()}}

    async def searcher_statuses(self) -> dict[str, dict]:
        """Per signal type: the version its slots serve, entries and live delta summed over slots."""
        names = list(self.searchers)
        results = await asyncio.gather(*(h.status.remote() for n in names for h in self.searchers[n]))
        out, i = {}, 0
        for name in names:
            slots = results[i : i + len(self.searchers[name])]
            i += len(slots)
            out[name] = {
                "version": slots[0]["version"],
                "count": sum(s["count"] for s in slots),
                "live_delta": sum(s["live_delta"] for s in slots),
                "ready": all(s["ready"] for s in slots),
                "reason": "; ".join(s["reason"] for s in slots if not s["ready"]),
            }
        return out

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    async def metrics_endpoint(self) -> Response:
        try:
            metrics.set_index_gauges(await asyncio.wait_for(self.searcher_statuses(), timeout=5))
        except Exception as exc:  # the request metrics are still worth serving
            log.warning("index gauges not updated: %s", exc)
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    @app.get("/v1/deployments", tags=["operations"])
    async def deployments(self, request: Request) -> dict:
        """This application's deployments with their running replicas, and the cluster's
        resources: the shape a load test measured (admin)."""
        self.principal(request).require("admin")
        app_name = serve.get_replica_context().app_name
        status = (await self.run(serve.status)).applications[app_name]
        resources = ray.cluster_resources()
        return {
            "application": app_name,
            "deployments": {name: {"status": getattr(d.status, "value", str(d.status)), "replicas": d.replica_states.get("RUNNING", 0)} for name, d in status.deployments.items()},
            "cpus": os.cpu_count(),  # this node's cores (the logical CPUs Ray schedules by may differ)
            "ray_cpus": resources.get("CPU", 0),
            "gpus": resources.get("GPU", 0),
        }

    @app.get("/v1/signal-types", tags=["matching"])
    async def signal_types(self, request: Request) -> dict[str, list[SignalTypeOut]]:
        self.principal(request)
        return {
            "signal_types": [
                SignalTypeOut(name=s.name, content_types=sorted(s.content_types), index_kind=s.index_kind, unit=s.unit,
                              default_threshold=s.default_threshold, threshold=self.threshold(s))
                for s in self.served
            ]
        }

    # -- banks ------------------------------------------------------------------------------------
    @app.post("/v1/banks", status_code=201, tags=["banks"])
    async def create_bank(self, request: Request, body: BankCreate) -> BankOut:
        self.principal(request).require("bank_write", body.name)
        return self.bank_out(await self.run(self.catalog.create_bank, body.name, body.description, body.labels, body.thresholds))

    @app.get("/v1/banks", tags=["banks"])
    async def list_banks(self, request: Request) -> BankList:
        who = self.principal(request)
        who.require_reader()
        return BankList(banks=[self.bank_out(b) for b in await self.run(self.catalog.list_banks) if who.sees(b.name)])

    @app.get("/v1/banks/{bank}", tags=["banks"])
    async def get_bank(self, request: Request, bank: str) -> BankOut:
        self.principal(request).require_reader(bank)
        return self.bank_out(await self.run(self.catalog.get_bank, bank))

    @app.patch("/v1/banks/{bank}", tags=["banks"])
    async def update_bank(self, request: Request, bank: str, body: BankPatch) -> BankOut:
        self.principal(request).require("bank_write", bank)
        return self.bank_out(await self.run(self.catalog.update_bank, bank, **body.model_dump(exclude_none=True)))

    @app.delete("/v1/banks/{bank}", status_code=204, tags=["banks"])
    async def delete_bank(self, request: Request, bank: str) -> Response:
        self.principal(request).require("admin")
        await self.run(self.catalog.delete_bank, bank)
        return Response(status_code=204)

    # -- entries ----------------------------------------------------------------------------------
    @app.post("/v1/banks/{bank}/entries", status_code=201, tags=["banks"], openapi_extra=either_body(EntryJSON, ("file", "content_type", "metadata")))
    async def add_entry(self, request: Request, bank: str) -> EntryOut:
        self.principal(request).require("bank_write", bank)
        body = await read_request(request, EntryJSON, self.settings.limits.max_upload_bytes)
        await self.run(self.catalog.get_bank, bank)  # an unknown bank fails before any work
        if isinstance(body, Upload):
            content_type = body.fields.get("content_type") or sniff_content_type(body.data, body.filename)
            entry = await self.new_entry(bank, body.data, content_type, json_object(body.fields.get("metadata"), "the 'metadata' field"))
        elif body.text is not None:
            entry = await self.new_entry(bank, body.text, "text", body.metadata)
        else:
            content_type, signals = self.parse_signals(body.signals, body.content_type)
            entry = Entry(bank=bank, content_type=content_type, signals=signals, metadata=body.metadata)
        (added,) = await self.run(self.catalog.add_entries, bank, [entry])
        return entry_out(added)

    async def new_entry(self, bank: str, content: bytes | str, content_type: str, metadata: dict) -> Entry:
        """An entry with every served signal of the media (computed before anything is stored)."""
        if content_type not in CONTENT_TYPES or content_type == "post":
            raise InvalidInput(f"content_type must be one of {', '.join(c for c in CONTENT_TYPES if c != 'post')}")
        signals = await self.compute(content, content_type, self.wanted_types(content_type, None))
        values = {name: s.value for name, s in signals.items() if s.value is not None}
        if not values:
            reasons = "; ".join(f"{n}: {s.reason}" for n, s in signals.items()) or f"no signal type served for {content_type}"
            raise InvalidInput(f"no signal could be computed from this {content_type} ({reasons})")
        data = content.encode() if isinstance(content, str) else content
        digest = await self.run(self.catalog.put_media, data)
        return Entry(bank=bank, content_type=content_type, signals=values, metadata=metadata, media=digest)

    def parse_signals(self, signals: dict[str, Any], content_type: str | None) -> tuple[str, dict[str, Any]]:
        """Raw signals given by a client, validated; the content type given or implied by them."""
        if not signals:
            raise InvalidInput("'signals' must name at least one signal type")
        types = [get_signal_type(name) for name in signals]
        if content_type is None:
            common = set.intersection(*(set(t.content_types) for t in types))
            if len(common) != 1:
                raise InvalidInput("say which content_type these signals describe")
            content_type = common.pop()
        for t in types:
            if content_type not in t.content_types:
                raise InvalidInput(f"{t.name} does not describe content of type {content_type!r}")
        return content_type, {t.name: t.parse(signals[t.name]) for t in types}

    @app.get("/v1/banks/{bank}/entries", tags=["banks"])
    async def list_entries(self, request: Request, bank: str, limit: int = Query(100, ge=1, le=1000), cursor: str | None = None) -> EntryList:
        self.principal(request).require_reader(bank)
        entries, next_cursor = await self.run(self.catalog.list_entries, bank, limit, cursor)
        return EntryList(entries=[entry_out(e) for e in entries], next_cursor=next_cursor)

    @app.get("/v1/banks/{bank}/entries/{entry_id}", tags=["banks"])
    async def get_entry(self, request: Request, bank: str, entry_id: str) -> EntryOut:
        self.principal(request).require_reader(bank)
        return entry_out(await self.run(self.catalog.get_entry, bank, entry_id))

    @app.patch("/v1/banks/{bank}/entries/{entry_id}", tags=["banks"])
    async def update_entry(self, request: Request, bank: str, entry_id: str, body: EntryPatch) -> EntryOut:
        self.principal(request).require("bank_write", bank)
        return entry_out(await self.run(self.catalog.update_entry, bank, entry_id, body.enabled, body.metadata))

    @app.delete("/v1/banks/{bank}/entries/{entry_id}", status_code=204, tags=["banks"])
    async def delete_entry(self, request: Request, bank: str, entry_id: str) -> Response:
        self.principal(request).require("bank_write", bank)
        await self.run(self.catalog.delete_entry, bank, entry_id)
        return Response(status_code=204)

    # -- hashing and matching ---------------------------------------------------------------------
    @app.post("/v1/hash", tags=["matching"], openapi_extra=either_body(HashJSON, ("file", "content_type")))
    async def hash(self, request: Request) -> HashResult:
        self.principal(request).require_reader()
        body = await read_request(request, HashJSON, self.settings.limits.max_upload_bytes)
        content, content_type = self.item_of(body)
        signals = await self.compute(content, content_type, self.wanted_types(content_type, None))
        return HashResult(
            content_type=content_type,
            signals={n: s.value for n, s in signals.items() if s.value is not None},
            quality={n: s.quality for n, s in signals.items() if s.quality is not None},
        )

    def item_of(self, body: Upload | BaseModel) -> tuple[bytes | str, str]:
        if isinstance(body, Upload):
            content_type = body.fields.get("content_type") or sniff_content_type(body.data, body.filename)
            if content_type not in CONTENT_TYPES or content_type == "post":
                raise InvalidInput(f"content_type must be one of {', '.join(c for c in CONTENT_TYPES if c != 'post')}")
            return body.data, content_type
        return body.text, "text"

    @app.post("/v1/match", tags=["matching"], openapi_extra=either_body(MatchJSON, ("file", "content_type", "banks", "signal_types")))
    async def match(self, request: Request) -> MatchResult:
        started = time.perf_counter()
        who = self.principal(request)
        who.require("match")
        body = await read_request(request, MatchJSON, self.settings.limits.max_upload_bytes)
        if isinstance(body, Upload):
            banks, requested = csv_field(body.fields, "banks"), csv_field(body.fields, "signal_types")
            parts = [(None, *self.item_of(body), None)]
        else:
            banks, requested = body.banks, body.signal_types
            parts = self.parts_of(body)
        named, banks = banks, who.scope(banks)  # only granted banks are searched
        seq = await self.run(self.follow_catalog)  # searchers apply at least this much of the catalog
        unknown = [bank for bank in named or () if bank not in self.catalog.banks]
        if unknown:
            raise NotFound(f"no bank named {unknown[0]!r}")
        results = await asyncio.gather(*(self.match_part(name, content, ctype, raw, banks, requested, seq) for name, content, ctype, raw in parts))
        signals, matches, versions = {}, [], {}
        for part_signals, part_matches, part_versions in results:
            signals.update(part_signals)
            matches += part_matches
            versions.update(part_versions)
        matches.sort(key=lambda m: (-m.score, m.distance))
        for m in matches:
            metrics.MATCHES.labels(m.signal_type).inc()
        is_post = not isinstance(body, Upload) and body.post is not None
        verdict = {"matched": bool(matches), "parts": sorted({m.part for m in matches if m.part})} if is_post else None
        content_type = "post" if is_post else parts[0][2]
        return MatchResult(content_type=content_type, signals=signals, matches=matches, index_versions=versions,
                           took_ms=round((time.perf_counter() - started) * 1000, 2), verdict=verdict)

    def parts_of(self, body: MatchJSON) -> list[tuple[str | None, str | None, str, dict | None]]:
        """(part name, content, content type, raw signals) of each thing to match."""
        if body.text is not None:
            return [(None, body.text, "text", None)]
        if body.signals is not None:
            content_type, signals = self.parse_signals(body.signals, body.content_type)
            return [(None, None, content_type, signals)]
        post = body.post
        parts: list[PostPart] = ([PostPart(name="text", text=post.text)] if post.text is not None else []) + post.parts
        if not parts:
            raise InvalidInput("a post needs 'text' or at least one part")
        out = []
        for i, part in enumerate(parts):
            name = part.name or f"parts[{i - (post.text is not None)}]"
            if part.text is not None:
                out.append((name, part.text, "text", None))
            else:
                out.append((name, None, *self.parse_signals(part.signals, part.content_type)))
        return out

    async def match_part(self, part, content, content_type, raw, banks, requested, seq):
        if raw is None:
            computed = await self.compute(content, content_type, self.wanted_types(content_type, requested), query=True)
            values = {n: s.value for n, s in computed.items() if s.value is not None}
        else:
            values = {n: v for n, v in raw.items() if not requested or n in requested}
        searched = [(get_signal_type(n), v) for n, v in values.items() if n in self.searchers]
        found = await asyncio.gather(*(self.search(st, v, banks, seq) for st, v in searched))
        matches, versions = [], {}
        for (signal_type, _), (version, hits) in zip(searched, found):
            versions[signal_type.name] = version
            matches += self.to_matches(signal_type, hits, part)
        return values, matches, versions

    async def search(self, signal_type: SignalType, value: Any, banks: list[str] | None, seq: int):
        """One signal value through every slot of its searchers; merged hits, nearest first."""
        scope = banks if banks is not None else list(self.catalog.banks)
        radius = max([self.threshold(signal_type, b) for b in scope], default=self.threshold(signal_type))
        request = {"values": [value], "k": self.settings.serve.max_matches, "radius": radius, "banks": banks, "min_seq": seq}
        started = time.perf_counter()
        replies = await asyncio.gather(*(h.search.remote(request) for h in self.searchers[signal_type.name]))
        metrics.SEARCH_SECONDS.labels(signal_type.name).observe(time.perf_counter() - started)
        hits = sorted((h for r in replies for h in r["hits"][0]), key=lambda h: h[2])[: self.settings.serve.max_matches]
        return replies[0]["version"], hits

    def to_matches(self, signal_type: SignalType, hits, part: str | None) -> list[Match]:
        out = []
        for entry_id, bank, distance in hits:
            entry = self.catalog.entries.get(bank, {}).get(entry_id)
            threshold = self.threshold(signal_type, bank)
            if entry is None or distance > threshold:  # deleted since the searcher looked, or a stricter bank
                continue
            out.append(Match(bank=bank, entry_id=entry_id, signal_type=signal_type.name, distance=distance,
                             score=round(signal_type.score(distance), 6), threshold=threshold,
                             labels=self.catalog.banks.get(bank, {}).get("labels", []), metadata=entry.get("metadata", {}), part=part))
        return out

    # -- index operations -------------------------------------------------------------------------
    @app.post("/v1/reindex", status_code=202, tags=["indexes"], openapi_extra=either_body(ReindexRequest, ()))
    async def reindex(self, request: Request) -> ReindexAccepted:
        self.principal(request).require("admin")
        body = await read_request(request, ReindexRequest, 1 << 16, optional=True)
        names = body.signal_types if isinstance(body, ReindexRequest) else None
        for name in names or ():
            get_signal_type(name)
        status, ref = await self.run(jobs.submit, self.settings, names)
        self.jobs[status.job_id] = ref
        return ReindexAccepted(job_id=status.job_id)

    @app.get("/v1/reindex/{job_id}", tags=["indexes"])
    async def reindex_status(self, request: Request, job_id: str) -> jobs.JobStatus:
        self.principal(request).require("admin")
        status = await self.run(jobs.read_status, self.store, job_id)
        ref = self.jobs.get(job_id)
        if status.state in ("pending", "running") and ref is not None and ray.wait([ref], timeout=0)[0]:
            try:
                ray.get(ref)
            except Exception as exc:  # the task died without recording it (its worker crashed)
                status = status.model_copy(update={"state": "failed", "error": f"the job's task died: {exc}"})
                await self.run(jobs.write_status, self.store, status)
            else:
                status = await self.run(jobs.read_status, self.store, job_id)
        return status

    @app.get("/v1/indexes", tags=["indexes"])
    async def indexes(self, request: Request) -> dict[str, dict]:
        self.principal(request).require("admin")
        live = await self.searcher_statuses()
        out = {}
        for name in self.searchers:
            published = await self.run(IndexVersions(self.store, name).status)
            out[name] = {**published, "serving": live[name]["version"], "live_delta": live[name]["live_delta"]}
        return out

    @app.post("/v1/indexes/{signal_type}/rollback", tags=["indexes"])
    async def rollback(self, request: Request, signal_type: str, body: RollbackRequest) -> dict:
        self.principal(request).require("admin")
        versions = IndexVersions(self.store, get_signal_type(signal_type).name)
        await self.run(versions.rollback, body.version)
        return await self.run(versions.status)
