"""HMA-compatible endpoints: the calls a Hasher-Matcher-Actioner 2.0 client makes, under /hma.

Read from HMA's own Flask blueprints (facebook/ThreatExchange, hasher-matcher-actioner,
OpenMediaMatch/blueprints): `/m` matching, `/h` hashing, `/c` curation. Each answers in HMA's
shape and status, errors included (`{"message": ...}`), and goes through our tokens, grants
and match path, so an HMA lookup answers what `/v1/match` answers for the same hash.

Where we differ, on purpose: `bank_content_id` is our entry id (a string; HMA's is an integer
of its database); bank names are ours upper-cased (HMA's are `[A-Z0-9_]+`; a name given in
any case is looked up lower-cased); `matching_enabled_ratio` is 1.0 or 0.0 (a bank is enabled
or not: no coin flip); lookups by `url` are refused (the service fetches nothing: upload the
file instead).
"""

from __future__ import annotations

import json
from typing import Any, Callable

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.datastructures import UploadFile

from mediamatch.platform.catalog import Bank, Entry
from mediamatch.platform.errors import Conflict, Forbidden, InvalidInput, MalformedRequest, MediamatchError, NotFound
from mediamatch.platform.exchange import TEXT, hma_vpdq, resolve_signal_type
from mediamatch.platform.media import CONTENT_TYPES, upload_content_type
from mediamatch.platform.signals import get_signal_type

from ..http import IngressDep, read_body
from .matching import match_parts


class HmaRoute(APIRoute):
    """Errors in HMA's shape: `{"message": ...}` with the status ours would have."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def route(request: Request):
            try:
                return await handler(request)
            except MediamatchError as exc:
                headers = {"Retry-After": str(exc.retry_after)} if getattr(exc, "retry_after", None) else None
                return JSONResponse({"message": str(exc)}, status_code=exc.status, headers=headers)
            except RequestValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
                where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "body"))
                return JSONResponse({"message": f"{where}: {first['msg']}" if where else first["msg"]}, status_code=422)

        return route


router = APIRouter(prefix="/hma", tags=["hma"], route_class=HmaRoute)

UPLOADED_TYPES = [c for c in CONTENT_TYPES if c != "post"]


class HmaBankCreate(BaseModel):
    name: str
    enabled_ratio: float | None = 1.0
    enabled: bool | None = None


def hma_bank(bank: Bank) -> dict[str, Any]:
    return {"name": bank.name.upper(), "matching_enabled_ratio": 1.0 if bank.enabled else 0.0}


def our_bank(name: str) -> str:
    return name.lower()


def banks_param(banks: str | None) -> list[str] | None:
    return [our_bank(b.strip()) for b in banks.split(",") if b.strip()] if banks else None


def hma_signal_name(name: str, content_type: str | None) -> str:
    return "video_md5" if name == "md5" and content_type == "video" else name


def raw_signal(signal_type: str, signal: str) -> tuple[str, Any]:
    """(our signal type, parsed value) of an HMA-named signal; HMA's vPDQ form is converted."""
    name, _ = resolve_signal_type(signal_type)
    if name == TEXT:
        raise InvalidInput(f"look {signal_type} up through POST /v1/match with the text")
    value = hma_vpdq(signal) if name == "vpdq" and signal.strip().startswith("[") else signal
    try:
        return name, get_signal_type(name).parse(value)
    except InvalidInput as exc:
        raise InvalidInput(f"invalid signal: {exc}") from None


async def lookup(ingress, request: Request, values: dict[str, Any], banks: list[str] | None, content_type: str | None = None,
                 content: bytes | None = None) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Per signal type, per bank, HMA's `{"bank_content_id", "distance"}` of every match: what
    /v1/match finds for the same values (or the same uploaded content), through the same code."""
    who = await ingress.principal(request)
    who.require("match")
    part = (None, content, content_type or "photo", None if content is not None else values)
    try:
        result = await match_parts(ingress, who, [part], banks, None)
    except NotFound as exc:
        raise NotFound(str(exc).replace("no bank named", "bank") + " not found") from None
    out: dict[str, dict[str, list[dict[str, Any]]]] = {hma_signal_name(n, content_type): {} for n in result.signals}
    for m in sorted(result.matches, key=lambda m: (m.distance, m.entry_id)):
        out.setdefault(hma_signal_name(m.signal_type, content_type), {}).setdefault(m.bank.upper(), []).append(
            {"bank_content_id": m.entry_id, "distance": f"{m.distance:g}"})
    return out


async def uploaded(request: Request, limit: int) -> tuple[bytes, str, dict[str, str]]:
    """HMA's upload: multipart with one file whose field name is its content type (`photo`, `video`, ...)."""
    await read_body(request, limit)
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise InvalidInput("Missing multipart/form-data file upload")
    async with request.form(max_files=2, max_fields=16) as form:
        files = [(k, v) for k, v in form.multi_items() if isinstance(v, UploadFile)]
        if not files:
            raise InvalidInput("Missing multipart/form-data file upload")
        if len(files) > 1:
            raise InvalidInput("Only one file allowed per request")
        field, file = files[0]
        if field not in UPLOADED_TYPES:
            raise InvalidInput(f"no such content type {field!r}: name the file's field {', '.join(UPLOADED_TYPES)}")
        fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        data = await file.read()
        return data, upload_content_type(data, file.filename or "", file.content_type, field), fields  # the field declares the type


# -- matching (/m) ----------------------------------------------------------------------------------
@router.get("/m/raw_lookup")
async def raw_lookup(request: Request, ingress: IngressDep, signal: str, signal_type: str, banks: str | None = None,
                     include_distance: bool = False) -> dict[str, list]:
    name, value = raw_signal(signal_type, signal)
    found = await lookup(ingress, request, {name: value}, banks_param(banks))
    matches = [m for bank in found.get(name, {}).values() for m in bank]
    return {"matches": matches if include_distance else [m["bank_content_id"] for m in matches]}


@router.get("/m/lookup")
async def lookup_get(request: Request, ingress: IngressDep, signal: str | None = None, signal_type: str | None = None,
                     banks: str | None = None, url: str | None = Query(None, description="not supported: POST the file"),
                     seed: str | None = None, bypass_coinflip: bool = False) -> dict[str, Any]:
    if url:
        raise InvalidInput("lookups by url are not supported here (the service fetches nothing): POST the file to /hma/m/lookup")
    if not signal or not signal_type:
        raise InvalidInput("Either url or both signal and signal_type are required")
    name, value = raw_signal(signal_type, signal)
    return (await lookup(ingress, request, {name: value}, banks_param(banks))).get(name, {})


@router.post("/m/lookup")
async def lookup_post(request: Request, ingress: IngressDep, banks: str | None = None, seed: str | None = None,
                      bypass_coinflip: bool = False) -> dict[str, Any]:
    data, content_type, _ = await uploaded(request, ingress.settings.limits.max_upload_bytes)
    return await lookup(ingress, request, {}, banks_param(banks), content_type, data)


# -- hashing (/h) -----------------------------------------------------------------------------------
@router.post("/h/hash")
async def hash_post(request: Request, ingress: IngressDep) -> dict[str, str]:
    (await ingress.principal(request)).require_reader()
    data, content_type, _ = await uploaded(request, ingress.settings.limits.max_upload_bytes)
    signals = await ingress.compute(data, content_type, ingress.wanted_types(content_type, None))
    return {hma_signal_name(n, content_type): s.value if isinstance(s.value, str) else json.dumps(s.value)
            for n, s in signals.items() if s.value is not None}


# -- curation (/c) ----------------------------------------------------------------------------------
@router.get("/c/banks")
async def banks_index(request: Request, ingress: IngressDep) -> list[dict[str, Any]]:
    who = await ingress.principal(request)
    who.require_reader()
    return [hma_bank(b) for b in await ingress.run(ingress.catalog.list_banks) if who.sees(b.name)]


@router.get("/c/bank/{bank_name}")
async def bank_show(request: Request, bank_name: str, ingress: IngressDep) -> dict[str, Any]:
    (await ingress.principal(request)).require_reader(our_bank(bank_name))
    return hma_bank(await ingress.run(ingress.catalog.get_bank, our_bank(bank_name)))


@router.post("/c/banks", status_code=201)
async def bank_create(request: Request, body: HmaBankCreate, ingress: IngressDep) -> dict[str, Any]:
    name = our_bank(body.name)
    (await ingress.principal(request)).require("bank_write", name)
    ratio = body.enabled_ratio if body.enabled_ratio is not None else float(body.enabled if body.enabled is not None else True)
    if ratio not in (0.0, 1.0):
        raise InvalidInput("enabled_ratio must be 0.0 or 1.0 here: a bank matches or it does not")
    try:
        await ingress.run(ingress.catalog.create_bank, name)
    except Conflict:
        raise Forbidden("Bank already exists") from None  # HMA's status for it
    if ratio == 0.0:
        await ingress.run(ingress.catalog.update_bank, name, enabled=False)
    return hma_bank(await ingress.run(ingress.catalog.get_bank, name))


def hma_metadata(text: str | None) -> dict[str, Any]:
    """HMA's `metadata` (a JSON object: content_id, content_uri, json) as the entry's metadata."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        raise MalformedRequest("metadata form field must be valid JSON") from None
    if not isinstance(value, dict):
        raise InvalidInput("metadata should be a json object")
    return value


@router.post("/c/bank/{bank_name}/content")
async def bank_add_content(request: Request, bank_name: str, ingress: IngressDep, metadata: str | None = None) -> dict[str, Any]:
    bank = our_bank(bank_name)
    (await ingress.principal(request)).require("bank_write", bank)
    await ingress.run(ingress.catalog.get_bank, bank)
    if request.query_params.get("url"):
        raise InvalidInput("banking by url is not supported here (the service fetches nothing): upload the file")
    data, content_type, fields = await uploaded(request, ingress.settings.limits.max_upload_bytes)
    entry = await ingress.new_entry(bank, data, content_type, hma_metadata(metadata or fields.get("metadata")))
    (added,) = await ingress.run(ingress.catalog.add_entries, bank, [entry])
    return {"id": added.entry_id, "signals": {hma_signal_name(n, content_type): v for n, v in added.signals.items() if isinstance(v, str)}}


@router.post("/c/bank/{bank_name}/signal")
async def bank_add_signals(request: Request, bank_name: str, ingress: IngressDep) -> dict[str, Any]:
    bank = our_bank(bank_name)
    (await ingress.principal(request)).require("bank_write", bank)
    await ingress.run(ingress.catalog.get_bank, bank)
    try:
        body = json.loads(await read_body(request, 1 << 20) or b"{}")
    except ValueError:
        raise MalformedRequest("the body must be a JSON object of signal type to signal") from None
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object of signal type to signal")
    body.pop("note", None)
    if not body:
        raise InvalidInput("No signals given")
    signals, content_types = {}, set()
    for given, value in body.items():
        name, implied = resolve_signal_type(given)
        signals[name] = raw_signal(given, str(value))[1]
        content_types.add(implied)
    content_type = next(iter(content_types - {None}), None) if len(content_types - {None}) == 1 else None
    content_type, signals = ingress.parse_signals(signals, content_type)
    (added,) = await ingress.run(ingress.catalog.add_entries, bank, [Entry(bank=bank, content_type=content_type, signals=signals)])
    return {"id": added.entry_id, "signals": {hma_signal_name(n, content_type): v for n, v in added.signals.items()}}
