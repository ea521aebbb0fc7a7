"""Banks and their entries: create, list, read, change, delete; bank media, a text or raw signals."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request, Response

from mediamatch.platform.catalog import Bank, Entry
from mediamatch.platform.media import json_object

from ..http import IngressDep, Upload, either_body, read_request
from ..models import BankCreate, BankList, BankOut, BankPatch, EntryJSON, EntryList, EntryOut, EntryPatch

router = APIRouter(tags=["banks"])


def bank_out(bank: Bank) -> BankOut:
    return BankOut(**bank.model_dump())


def entry_out(entry: Entry) -> EntryOut:
    return EntryOut(**entry.model_dump(exclude={"media"}))


@router.post("/v1/banks", status_code=201)
async def create_bank(request: Request, body: BankCreate, ingress: IngressDep) -> BankOut:
    (await ingress.principal(request)).require("bank_write", body.name)
    return bank_out(await ingress.run(ingress.catalog.create_bank, body.name, body.description, body.labels, body.thresholds))


@router.get("/v1/banks")
async def list_banks(request: Request, ingress: IngressDep) -> BankList:
    who = await ingress.principal(request)
    who.require_reader()
    return BankList(banks=[bank_out(b) for b in await ingress.run(ingress.catalog.list_banks) if who.sees(b.name)])


@router.get("/v1/banks/{bank}")
async def get_bank(request: Request, bank: str, ingress: IngressDep) -> BankOut:
    (await ingress.principal(request)).require_reader(bank)
    return bank_out(await ingress.run(ingress.catalog.get_bank, bank))


@router.patch("/v1/banks/{bank}")
async def update_bank(request: Request, bank: str, body: BankPatch, ingress: IngressDep) -> BankOut:
    (await ingress.principal(request)).require("bank_write", bank)
    return bank_out(await ingress.run(ingress.catalog.update_bank, bank, **body.model_dump(exclude_none=True)))


@router.delete("/v1/banks/{bank}", status_code=204)
async def delete_bank(request: Request, bank: str, ingress: IngressDep) -> Response:
    (await ingress.principal(request)).require("admin")
    await ingress.run(ingress.catalog.delete_bank, bank)
    return Response(status_code=204)


@router.post("/v1/banks/{bank}/entries", status_code=201, openapi_extra=either_body(EntryJSON, ("file", "content_type", "metadata")))
async def add_entry(request: Request, bank: str, ingress: IngressDep) -> EntryOut:
    (await ingress.principal(request)).require("bank_write", bank)
    body = await read_request(request, EntryJSON, ingress.settings.limits.max_upload_bytes)
    await ingress.run(ingress.catalog.get_bank, bank)  # an unknown bank fails before any work
    if isinstance(body, Upload):
        data, content_type = ingress.item_of(body)
        entry = await ingress.new_entry(bank, data, content_type, json_object(body.fields.get("metadata"), "the 'metadata' field"))
    elif body.text is not None:
        entry = await ingress.new_entry(bank, body.text, "text", body.metadata)
    else:
        content_type, signals = ingress.parse_signals(body.signals, body.content_type)
        entry = Entry(bank=bank, content_type=content_type, signals=signals, metadata=body.metadata)
    (added,) = await ingress.run(ingress.catalog.add_entries, bank, [entry])
    return entry_out(added)


@router.get("/v1/banks/{bank}/entries")
async def list_entries(request: Request, bank: str, ingress: IngressDep, limit: int = Query(100, ge=1, le=1000), cursor: str | None = None) -> EntryList:
    (await ingress.principal(request)).require_reader(bank)
    entries, next_cursor = await ingress.run(ingress.catalog.list_entries, bank, limit, cursor)
    return EntryList(entries=[entry_out(e) for e in entries], next_cursor=next_cursor)


@router.get("/v1/banks/{bank}/entries/{entry_id}")
async def get_entry(request: Request, bank: str, entry_id: str, ingress: IngressDep) -> EntryOut:
    (await ingress.principal(request)).require_reader(bank)
    return entry_out(await ingress.run(ingress.catalog.get_entry, bank, entry_id))


@router.patch("/v1/banks/{bank}/entries/{entry_id}")
async def update_entry(request: Request, bank: str, entry_id: str, body: EntryPatch, ingress: IngressDep) -> EntryOut:
    (await ingress.principal(request)).require("bank_write", bank)
    return entry_out(await ingress.run(ingress.catalog.update_entry, bank, entry_id, body.enabled, body.metadata))


@router.delete("/v1/banks/{bank}/entries/{entry_id}", status_code=204)
async def delete_entry(request: Request, bank: str, entry_id: str, ingress: IngressDep) -> Response:
    (await ingress.principal(request)).require("bank_write", bank)
    await ingress.run(ingress.catalog.delete_entry, bank, entry_id)
    return Response(status_code=204)
