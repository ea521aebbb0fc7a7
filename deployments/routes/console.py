"""The web console at /ui: banks, a bank's entries with thumbnails, try a match, index versions
with reindex progress and rollback, the latest load-test report. Server-rendered HTML (Jinja2,
autoescaped) with one small script, behind the API's tokens and grants.

A browser cannot send a Bearer header on page loads, so logging in keeps the token in an
HttpOnly, SameSite=Strict cookie scoped to /ui that only these routes accept (the API takes the
header alone). Every POST must also come from the console's own origin (its Origin, else its
Referer header), so no other site can make a browser change anything through the console, in
anonymous loopback mode (no tokens, no cookie) too.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader
from starlette.datastructures import UploadFile

from mediamatch.platform.auth import ANONYMOUS, Principal
from mediamatch.platform.errors import Forbidden, InvalidInput, MediamatchError, NotFound, Unauthorized
from mediamatch.platform.media import open_image
from mediamatch.platform.storage import ObjectStore
from mediamatch.platform.versions import IndexVersions

from ..http import IngressDep, Upload, read_body
from . import indexes, matching

FILES = Path(__file__).resolve().parent.parent / "console"
STATIC = {"console.css": "text/css", "console.js": "text/javascript"}
COOKIE = "mediamatch_token"
THUMBNAIL_PX = 160
ENTRIES_PER_PAGE = 48
HEADERS = {  # nothing but this origin's own files runs, loads or frames the pages
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

templates = Environment(loader=FileSystemLoader(FILES), autoescape=True)
templates.filters["pretty"] = lambda value: json.dumps(value, indent=1, ensure_ascii=False, sort_keys=True)


class ConsoleRoute(APIRoute):
    """Errors become pages: the login form when unauthenticated, else the error's message."""

    def get_route_handler(self):
        handle = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handle(request)
            except Unauthorized as exc:  # back to this page after logging in (a GET), else to the banks
                here = str(request.url.replace(scheme="", netloc="")) if request.method == "GET" else "/ui/banks"
                return page(request, None, "login.html", status=401, error=str(exc), next=here)
            except MediamatchError as exc:
                response = page(request, None, "error.html", status=exc.status, error=str(exc), code=exc.code)
                if getattr(exc, "retry_after", None):
                    response.headers["Retry-After"] = str(exc.retry_after)
                return response

        return guarded


router = APIRouter(prefix="/ui", route_class=ConsoleRoute)


async def viewer(request: Request, ingress) -> Principal:
    """The team behind this request: its Authorization header or its login cookie."""
    token = request.cookies.get(COOKIE)
    return await ingress.principal(request, f"Bearer {token}" if token else None)


def same_origin(request: Request) -> None:
    """Refuse a state change sent from another site's page."""
    sender = request.headers.get("origin") or request.headers.get("referer") or ""
    if urlsplit(sender).netloc != request.headers.get("host"):
        raise Forbidden("the console takes forms from its own pages only (this request's Origin is another site's, or missing)")


def page(request: Request, who: Principal | None, name: str, status: int = 200, **context) -> HTMLResponse:
    html = templates.get_template(name).render(
        who=who, logged_in=who is not None and who is not ANONYMOUS,
        can_match=bool(who and who.allows("match")), is_admin=bool(who and who.allows("admin")),
        path=request.url.path, **context,
    )
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def back_to(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def thumbnail(data: bytes, max_pixels: int) -> bytes:
    """A JPEG of a photo, at most THUMBNAIL_PX on a side (decoded with the service's pixel limit)."""
    image = open_image(data, max_pixels)
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


async def form_of(request: Request, limit: int):
    """A POSTed form from the console's own pages, its body within `limit` bytes."""
    same_origin(request)
    await read_body(request, limit)  # bounded; request.form() then parses these bytes
    return await request.form(max_files=1, max_fields=64)


# -- logging in ---------------------------------------------------------------------------------
@router.get("")
async def home() -> RedirectResponse:
    return back_to("/ui/banks")


@router.get("/login")
async def login_form(request: Request, ingress: IngressDep, next: str = "/ui/banks") -> HTMLResponse:
    return page(request, None, "login.html", anonymous=ingress.auth.anonymous, next=next)


@router.post("/login")
async def login(request: Request, ingress: IngressDep) -> Response:
    form = await form_of(request, 1 << 14)
    token, next_page = str(form.get("token", "")).strip(), str(form.get("next", ""))
    next_page = next_page if next_page.startswith("/ui/") else "/ui/banks"  # never off this site
    try:
        if not token and not ingress.auth.anonymous:
            raise Unauthorized("type your team's token")
        await ingress.principal(request, f"Bearer {token}")
    except Unauthorized as exc:
        return page(request, None, "login.html", status=401, error=str(exc), next=next_page)
    response = back_to(next_page)
    if token:  # anonymous mode needs none
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/ui", secure=request.url.scheme == "https")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    same_origin(request)
    response = back_to("/ui/login")
    response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict")
    return response


@router.get("/static/{name}")
async def static(name: str) -> FileResponse:
    if name not in STATIC:
        raise NotFound(f"no console file {name!r}")
    return FileResponse(FILES / name, media_type=STATIC[name], headers={"Cache-Control": "no-cache"})


# -- banks and entries --------------------------------------------------------------------------
@router.get("/banks")
async def banks_page(request: Request, ingress: IngressDep) -> HTMLResponse:
    who = await viewer(request, ingress)
    who.require_reader()
    banks = [b for b in await ingress.run(ingress.catalog.list_banks) if who.sees(b.name)]
    disabled = await ingress.run(disabled_counts, ingress.catalog, [b.name for b in banks])
    return page(request, who, "banks.html", banks=banks, disabled=disabled)


def disabled_counts(catalog, banks: list[str]) -> dict[str, int]:
    counts = {name: catalog.entries.get(name) for name in banks}
    return {name: 0 if entries is None else entries.disabled_count() for name, entries in counts.items()}


@router.get("/banks/{bank}")
async def bank_page(request: Request, bank: str, ingress: IngressDep, cursor: str | None = None) -> HTMLResponse:
    who = await viewer(request, ingress)
    who.require_reader(bank)
    info = await ingress.run(ingress.catalog.get_bank, bank)
    entries, next_cursor = await ingress.run(ingress.catalog.list_entries, bank, ENTRIES_PER_PAGE, cursor)
    return page(request, who, "bank.html", bank=info, entries=entries, cursor=cursor, next_cursor=next_cursor,
                can_write=who.allows("bank_write", bank))


@router.get("/banks/{bank}/entries/{entry_id}/thumbnail")
async def entry_thumbnail(request: Request, bank: str, entry_id: str, ingress: IngressDep) -> Response:
    who = await viewer(request, ingress)
    who.require_reader(bank)
    entry = await ingress.run(ingress.catalog.get_entry, bank, entry_id)
    if entry.content_type != "photo" or not entry.media:
        raise NotFound(f"entry {entry_id!r} has no stored photo")
    data = await ingress.run(ingress.catalog.get_media, entry.media)
    jpeg = await ingress.run(thumbnail, data, ingress.settings.limits.max_image_pixels)
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400", **HEADERS})


@router.post("/banks/{bank}/entries/{entry_id}/enabled")
async def set_entry_enabled(request: Request, bank: str, entry_id: str, ingress: IngressDep) -> Response:
    form = await form_of(request, 1 << 14)
    (await viewer(request, ingress)).require("bank_write", bank)
    await ingress.run(ingress.catalog.update_entry, bank, entry_id, form.get("enabled") == "true", None)
    return back_to(f"/ui/banks/{quote(bank)}" + (f"?cursor={quote(str(form['cursor']))}" if form.get("cursor") else ""))


@router.post("/banks/{bank}/entries/{entry_id}/delete")
async def delete_entry(request: Request, bank: str, entry_id: str, ingress: IngressDep) -> Response:
    await form_of(request, 1 << 14)
    (await viewer(request, ingress)).require("bank_write", bank)
    await ingress.run(ingress.catalog.delete_entry, bank, entry_id)
    return back_to(f"/ui/banks/{quote(bank)}")


# -- try a match --------------------------------------------------------------------------------
@router.get("/match")
async def match_form(request: Request, ingress: IngressDep) -> HTMLResponse:
    who = await viewer(request, ingress)
    who.require("match")
    return page(request, who, "match.html", banks=await visible_banks(ingress, who), chosen=[])


@router.post("/match")
async def try_match(request: Request, ingress: IngressDep) -> HTMLResponse:
    form = await form_of(request, ingress.settings.limits.max_upload_bytes)
    who = await viewer(request, ingress)
    who.require("match")
    file, text = form.get("file"), str(form.get("text") or "").strip()
    chosen = [str(b) for b in form.getlist("banks")]
    if isinstance(file, UploadFile) and file.filename:
        upload = Upload(data=await file.read(), filename=file.filename, media_type=file.content_type or "", fields={})
        content, content_type = ingress.item_of(upload)
        query = {"kind": content_type, "name": file.filename, "bytes": len(upload.data)}
        if content_type == "photo":
            jpeg = await ingress.run(thumbnail, upload.data, ingress.settings.limits.max_image_pixels)
            query["thumbnail"] = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
    elif text:
        content, content_type, query = text, "text", {"kind": "text", "text": text}
    else:
        raise InvalidInput("choose a file (photo, video, audio or text) or type a text to match")
    result = await matching.match_parts(ingress, who, [(None, content, content_type, None)], chosen or None, None)
    banked = {(m.bank, m.entry_id): ingress.catalog.entries.get(m.bank, {}).get(m.entry_id, {}) for m in result.matches}
    kinds = {key: entry.get("content_type", "") for key, entry in banked.items()}
    photos = {key for key, entry in banked.items() if entry.get("content_type") == "photo" and entry.get("media")}
    return page(request, who, "match.html", banks=await visible_banks(ingress, who), chosen=chosen, query=query,
                result=result, kinds=kinds, photos=photos)


async def visible_banks(ingress, who: Principal) -> list[str]:
    return [b.name for b in await ingress.run(ingress.catalog.list_banks) if who.sees(b.name)]


# -- indexes and reindex jobs -------------------------------------------------------------------
@router.get("/indexes")
async def indexes_page(request: Request, ingress: IngressDep) -> HTMLResponse:
    who = await viewer(request, ingress)
    who.require("admin")
    statuses = await indexes.index_statuses(ingress)
    versions = {name: list(reversed(await ingress.run(IndexVersions(ingress.store, name).list))) for name in statuses}
    return page(request, who, "indexes.html", statuses=statuses, versions=versions, jobs=await recent_jobs(ingress, 5))


async def recent_jobs(ingress, count: int) -> list:
    keys = await ingress.run(ingress.store.list, indexes.jobs.JOBS_PREFIX)  # r_<unix time>_…: oldest first
    ids = [k.rsplit("/", 1)[1].removesuffix(".json") for k in keys[-count:]]
    return [await indexes.job_status(ingress, job_id) for job_id in reversed(ids)]


@router.post("/reindex")
async def start_reindex(request: Request, ingress: IngressDep) -> Response:
    form = await form_of(request, 1 << 14)
    (await viewer(request, ingress)).require("admin")
    job_id = await indexes.start_reindex(ingress, [str(t) for t in form.getlist("signal_types")] or None)
    return back_to(f"/ui/jobs/{quote(job_id)}")


@router.get("/jobs/{job_id}")
async def job_page(request: Request, job_id: str, ingress: IngressDep) -> HTMLResponse:
    who = await viewer(request, ingress)
    who.require("admin")
    return page(request, who, "job.html", job=await indexes.job_status(ingress, job_id))


@router.get("/jobs/{job_id}/status")
async def job_status(request: Request, job_id: str, ingress: IngressDep) -> JSONResponse:
    """What the job page polls."""
    (await viewer(request, ingress)).require("admin")
    return JSONResponse((await indexes.job_status(ingress, job_id)).model_dump(), headers={"Cache-Control": "no-store"})


@router.post("/indexes/{signal_type}/rollback")
async def rollback(request: Request, signal_type: str, ingress: IngressDep) -> Response:
    form = await form_of(request, 1 << 14)
    (await viewer(request, ingress)).require("admin")
    await indexes.roll_back(ingress, signal_type, str(form.get("version", "")))
    return back_to("/ui/indexes")


# -- the latest load-test report ----------------------------------------------------------------
def report_store(ingress) -> ObjectStore | None:
    folder = ingress.settings.loadtest_report
    return ObjectStore(folder, endpoint=ingress.settings.s3_endpoint, region=ingress.settings.s3_region) if folder else None


@router.get("/loadtest")
async def loadtest_page(request: Request, ingress: IngressDep) -> HTMLResponse:
    who = await viewer(request, ingress)
    who.require("admin")
    store, report, missing = report_store(ingress), None, None
    if store is not None:
        try:
            report = json.loads(await ingress.run(store.get, "loadtest.json"))
        except FileNotFoundError:
            missing = f"no loadtest.json in {store.uri}"
    return page(request, who, "loadtest.html", folder=store and store.uri, report=report, missing=missing)


@router.get("/loadtest/loadtest.png")
async def loadtest_plot(request: Request, ingress: IngressDep) -> Response:
    (await viewer(request, ingress)).require("admin")
    store = report_store(ingress)
    if store is None:
        raise NotFound("no load-test report is configured (the loadtest_report setting)")
    try:
        png = await ingress.run(store.get, "loadtest.png")
    except FileNotFoundError:
        raise NotFound(f"no loadtest.png in {store.uri}") from None
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache", **HEADERS})
