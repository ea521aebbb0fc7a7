"""Hash-list exchange: import a partner's list into a bank (a job, like a reindex), export a bank.

The import body is the file itself (`text/csv`, `application/x-ndjson`, Parquet or octet-stream)
or multipart with the file in a part named `file` (and an optional `format` field). It is
spooled to a temporary file as it arrives (bounded by `limits.max_import_bytes`), then imported
in a thread of this replica by `mediamatch.platform.exchange`, the code the CLI runs: 202 and a
job id at once; `GET .../import/{job_id}` gives state, progress and the final report.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartParser

from mediamatch.platform.errors import InvalidInput, TooLarge
from mediamatch.platform.exchange import EXPORT_MEDIA_TYPES, FORMATS, ImportJob, export_chunks, new_import_job, read_job, run_import_job, write_job

from ..http import IngressDep
from ..models import ImportAccepted

router = APIRouter(tags=["exchange"])

FormatQuery = Query(None, pattern="^(" + "|".join(FORMATS) + ")$", description="default: from the file name or its first bytes")
IMPORT_BODY = {"requestBody": {"required": True, "content": {
    "text/csv": {"schema": {"type": "string"}},
    "application/x-ndjson": {"schema": {"type": "string"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary"}, "format": {"type": "string", "enum": list(FORMATS)}}}},
}}}


async def spool_body(request: Request, limit: int) -> tempfile.SpooledTemporaryFile:
    """The body in a temporary file (memory up to 8 MiB, then disk), refusing more than `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"the body is {declared} bytes, over the limit of {limit} (limits.max_import_bytes)")
    spool, size = tempfile.SpooledTemporaryFile(max_size=8 << 20), 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            spool.close()
            raise TooLarge(f"the body is over the limit of {limit} bytes (limits.max_import_bytes)")
        await asyncio.to_thread(spool.write, chunk)
    spool.seek(0)
    return spool


async def uploaded_file(request: Request, spool) -> tuple[object, str | None, str | None]:
    """The file of a multipart body (its stream, name and `format` field), parsed from the spool."""

    async def chunks():
        while chunk := await asyncio.to_thread(spool.read, 1 << 20):
            yield chunk

    form = await MultiPartParser(request.headers, chunks(), max_files=1, max_fields=8).parse()
    file = form.get("file")
    if not isinstance(file, UploadFile):
        raise InvalidInput("the multipart body needs a part named 'file' holding the list")
    spool.close()
    fmt = form.get("format")
    return file.file, file.filename, fmt if isinstance(fmt, str) and fmt else None


@router.post("/v1/banks/{bank}/import", status_code=202, openapi_extra=IMPORT_BODY)
async def import_list(request: Request, bank: str, ingress: IngressDep, format: str | None = FormatQuery) -> ImportAccepted:
    (await ingress.principal(request)).require("bank_write", bank)
    await ingress.run(ingress.catalog.get_bank, bank)  # an unknown bank fails before the upload is read
    stream = await spool_body(request, ingress.settings.limits.max_import_bytes)
    name = None
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        stream, name, form_format = await uploaded_file(request, stream)
        format = format or form_format
    elif format is None:
        format = {"text/csv": "csv", "application/x-ndjson": "jsonl", "application/jsonl": "jsonl"}.get(ctype)
    if format is not None and format not in FORMATS:
        raise InvalidInput(f"format must be one of {', '.join(FORMATS)}")
    stream.seek(0, 2)
    size = stream.tell()
    stream.seek(0)
    job = new_import_job(bank)
    await ingress.run(write_job, ingress.store, job)

    def work() -> None:
        with stream:
            run_import_job(ingress.store, ingress.catalog, job, stream, format, name, size)

    threading.Thread(target=work, name=f"import-{job.job_id}", daemon=True).start()
    return ImportAccepted(job_id=job.job_id)


@router.get("/v1/banks/{bank}/import/{job_id}")
async def import_status(request: Request, bank: str, job_id: str, ingress: IngressDep) -> ImportJob:
    (await ingress.principal(request)).require("bank_write", bank)
    return await ingress.run(read_job, ingress.store, bank, job_id)


@router.get("/v1/banks/{bank}/export", response_class=StreamingResponse,
            responses={200: {"content": {t: {} for t in EXPORT_MEDIA_TYPES.values()}, "description": "the bank's enabled entries"}})
async def export_bank(request: Request, bank: str, ingress: IngressDep, format: str = Query("csv", pattern="^(" + "|".join(FORMATS) + ")$")) -> StreamingResponse:
    (await ingress.principal(request)).require_reader(bank)
    await ingress.caught_up()
    await ingress.run(ingress.catalog.get_bank, bank)  # 404 now, not half-way through a stream
    suffix = {"csv": "csv", "jsonl": "jsonl", "parquet": "parquet"}[format]
    return StreamingResponse(export_chunks(ingress.catalog, bank, format), media_type=EXPORT_MEDIA_TYPES[format],
                             headers={"Content-Disposition": f'attachment; filename="{bank}.{suffix}"'})
