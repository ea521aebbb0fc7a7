"""What every router of the HTTP surface shares: errors in the API's shape, request metrics,
bodies that are multipart or JSON, the OpenAPI document, and the `IngressDep` dependency that
hands a route the replica's `Ingress` (its settings, catalog, auth and handles)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Annotated, Any

import ray
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from mediamatch.platform.errors import InvalidInput, MediamatchError, NotReady, Overloaded, TooLarge, UnsupportedContentType
from mediamatch.platform.media import CONTENT_TYPES

from . import metrics
from .models import EntryJSON, ErrorBody, HashJSON, MatchJSON, ReindexRequest

log = logging.getLogger("ray.serve")

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody} for code in (400, 401, 403, 404, 413, 415, 422, 503)}


# -- the replica's ingress, for the routes ----------------------------------------------------------
# Each Serve replica is its own process holding one Ingress, and the routes are plain functions of
# importable modules (pickled by reference), so a module global is that replica's instance.
_ingress: Any = None


def serve_routes_with(ingress: Any) -> None:
    global _ingress, _admission
    _ingress = ingress
    limits = ingress.settings.serve.ingress
    _admission = Admission(limits.max_ongoing_requests, limits.max_queued_requests)


async def current_ingress() -> Any:  # async: FastAPI runs a plain function's dependency in a thread
    if _ingress is None:
        raise NotReady("the ingress is still starting")
    return _ingress


IngressDep = Annotated[Any, Depends(current_ingress)]


# -- errors in the API's shape --------------------------------------------------------------------
def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def validation_response(errors: list[dict]) -> JSONResponse:
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        return error_response(400, "malformed_request", f"the body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}")
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    return error_response(422, "invalid_request", f"{where + ': ' if where else ''}{first['msg']}")


def mediamatch_response(exc: MediamatchError) -> JSONResponse:
    response = error_response(exc.status, exc.code, str(exc))
    if getattr(exc, "retry_after", None):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


async def _mediamatch_error(request: Request, exc: MediamatchError) -> JSONResponse:
    return mediamatch_response(exc)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return validation_response(exc.errors())


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    codes = {404: "not_found", 405: "method_not_allowed"}
    return error_response(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail))


async def _replica_lost(request: Request, exc: Exception) -> JSONResponse:
    """A replica died under this request: Serve is replacing it, so the caller should retry."""
    log.warning("a replica died under %s %s: %s", request.method, request.url.path, type(exc).__name__)
    response = error_response(503, "unavailable", "a part of the service restarted while answering; retry the request")
    response.headers["Retry-After"] = "1"
    return response


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(500, "internal", f"internal error ({type(exc).__name__}); it has been logged")


# -- admission: overload answered in the API's shape, whichever proxy is in front ---------------
class Admission:
    """At most `ongoing` requests at work in this replica and `queued` waiting for a turn (-1:
    any number); one more is refused at once with 503 `overloaded` and Retry-After. The app
    sheds rather than Serve (whose own limits `app.ingress_options` sets above these), because
    Serve's proxy and HAProxy would answer in their own plain-text shapes."""

    def __init__(self, ongoing: int, queued: int):
        self.free, self.queued, self.waiting = asyncio.Semaphore(ongoing), queued, 0

    async def enter(self) -> None:
        if self.queued >= 0 and self.free.locked() and self.waiting >= self.queued:
            raise Overloaded(f"the service is over capacity ({self.waiting} requests waiting in this replica); retry shortly")
        self.waiting += 1
        try:
            await self.free.acquire()
        finally:
            self.waiting -= 1

    def leave(self) -> None:
        self.free.release()


_admission: Admission | None = None
UNMETERED = {"/healthz", "/readyz", "/metrics"}  # probes answer under overload too


class RequestGate:
    """Every request counted and timed (`observe_request`: route, method, status; an exception
    that escapes the app counts as 500), and the metered ones admitted (`Admission`; a shed one
    still counted). Plain ASGI: Starlette's `BaseHTTPMiddleware` costs a task group and a pair
    of memory streams per request and middleware (with this, the async `current_ingress` and the
    shared catalog refresh: 271 -> 425 hash lookups/s at 8 clients)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), [500]

        async def sending(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self._admitted(scope, receive, sending)
        finally:
            route = scope.get("route")
            metrics.observe_request(getattr(route, "path", "unmatched"), scope["method"], status[0], time.perf_counter() - started)

    async def _admitted(self, scope, receive, send) -> None:
        path = scope["path"].removeprefix(scope.get("root_path", ""))
        if _admission is None or path in UNMETERED:
            return await self.app(scope, receive, send)
        try:
            await _admission.enter()
        except Overloaded as exc:
            metrics.SHED.labels().inc()
            return await mediamatch_response(exc)(scope, receive, send)
        try:
            await self.app(scope, receive, send)
        finally:
            _admission.leave()


def install(app: FastAPI) -> None:
    """The error handlers, the request metrics and the OpenAPI document of `app`."""
    app.add_exception_handler(MediamatchError, _mediamatch_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ray.exceptions.RayActorError, _replica_lost)
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(RequestGate)

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            _, defs = models_json_schema([(m, "validation") for m in EITHER_MODELS], ref_template="#/components/schemas/{model}")
            schema.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi


# -- request bodies that may be multipart or JSON -------------------------------------------------
FORM_FIELDS = {
    "file": {"type": "string", "format": "binary"},
    "content_type": {"type": "string", "enum": list(CONTENT_TYPES)},
    "metadata": {"type": "string", "description": "a JSON object"},
    "banks": {"type": "string", "description": "comma-separated bank names"},
    "signal_types": {"type": "string", "description": "comma-separated signal type names"},
}

EITHER_MODELS = (EntryJSON, HashJSON, MatchJSON, ReindexRequest)


def either_body(model: type[BaseModel], fields: tuple[str, ...]) -> dict:
    """OpenAPI for a body that is multipart (a `file` part and form fields) or JSON (`model`)."""
    form = {"type": "object", "required": ["file"], "properties": {f: FORM_FIELDS[f] for f in fields}}
    json_schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": form}, "application/json": {"schema": json_schema}}}}


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
    media_type: str = ""  # the part's Content-Type, as the client declared it
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
            return Upload(data=data, filename=file.filename or "", media_type=file.content_type or "", fields=fields)
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
