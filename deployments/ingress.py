"""The HTTP front door: the v1 API of ../shared/API.md on FastAPI, served by Ray Serve.

The ingress authenticates, bounds and decodes requests, writes the bank catalog, and fans
work out to the signal deployments (hashing, embedding) and to every searcher slot of every
signal type. Its routes live in `routes/`, one router per part of the contract; this module
holds the state they share (settings, catalog, auth, handles) and the operations on it.
Blocking work (object storage, the catalog) runs in threads so the event loop keeps serving.
"""

import asyncio
import functools
import inspect
import logging
from types import SimpleNamespace
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from ray import serve

from mediamatch.platform.auth import Authenticator, Principal, SharedRateLimiter
from mediamatch.platform.catalog import Catalog, Entry
from mediamatch.platform.errors import InvalidInput, MediamatchError, StorageError
from mediamatch.platform.fusion import FusedType
from mediamatch.platform.media import upload_content_type
from mediamatch.platform.settings import Settings
from mediamatch.platform.signals import Signal, SignalType, configure_signal_types, get_signal_type
from mediamatch.platform.storage import ObjectStore

from . import http
from .http import ERROR_RESPONSES, Upload
from .routes import banks, console, exchange, hma, indexes, matching, operations
from .searcher import ShardSearcher

log = logging.getLogger("ray.serve")

app = FastAPI(
    title="mediamatch",
    version="1",
    description="Find every known item that a photo, video, audio clip, text or post copies, in banks of known content.",
    responses=ERROR_RESPONSES,
)
http.install(app)
for router in (operations.router, matching.router, banks.router, indexes.router, exchange.router, hma.router):
    app.include_router(router)
app.include_router(console.router, include_in_schema=False)

@serve.deployment
@serve.ingress(app)
class Ingress:
    def __init__(self, settings: dict[str, Any], computers: list[list], searchers: list[list], rate_limits: Any, stored: list[str] = (), verifier: Any = None):
        """`computers`: [signal types, handle] of each signal deployment; `searchers`: [signal
        types, one handle per slot] of each searcher group (see `app.stage_groups`), or None:
        this replica searches them itself (`co_located`, see `InProcess`); `stored`:
        the types computed at banking and never searched (keypoints); `verifier`: the Verifier's
        handle (None: photo candidates are not verified); `rate_limits`: the RateLimits handle
        (None: no token has a rate)."""
        self.settings = Settings(**settings)
        configure_signal_types(self.settings)  # thresholds of model signals come with their model
        self.store = ObjectStore.from_settings(self.settings)
        self.catalog = Catalog(self.store)
        self.catalog_error: str | None = None
        self.caught_up = Coalesced(self.follow_catalog)  # a request's refresh: shared while one runs
        self.follow_catalog()  # load it now (a store that is down only delays readiness)
        self.auth = Authenticator(self.settings.tokens)
        self.limiter = SharedRateLimiter(rate_limits.take.remote) if rate_limits is not None else None  # a team's rate holds across every ingress replica
        self.computers = {tuple(types): handle for types, handle in computers}
        self.searchers = {tuple(types): handles or [InProcess(ShardSearcher.func_or_class(settings, types, 0, 1))] for types, handles in searchers}
        self.served = [get_signal_type(name) for types in self.searchers for name in types]
        self.served_names = {s.name for s in self.served}
        self.stored = [get_signal_type(name) for name in stored]
        self.verifier = verifier
        self.fused = fused_type(self.served_names, verifier)
        self.jobs: dict[str, Any] = {}  # reindex job id -> its task's ObjectRef
        if self.auth.anonymous:
            log.warning("no tokens configured: every loopback client may do anything, others are refused")
        http.serve_routes_with(self)

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

    async def principal(self, request, authorization: str | None = None) -> Principal:
        """The calling team (401 without a known token), within its rate limit (429); by the
        request's Authorization header, or by `authorization` (the console's login cookie)."""
        authorization = request.headers.get("authorization") or authorization
        who = self.auth.authenticate(authorization, request.client.host if request.client else None)
        if self.limiter is not None:
            await self.limiter.check(who)
        return who

    async def run(self, fn, *args, **kwargs):
        return await asyncio.to_thread(fn, *args, **kwargs)

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
        wanted = frozenset(s.name for s in types)  # only these: a query needs no keypoints (the Verifier has the image)
        calls = [handle for group, handle in self.computers.items() if wanted.intersection(group)]
        results = await asyncio.gather(*(handle.compute.remote((content, content_type, query, wanted)) for handle in calls))
        signals: dict[str, Signal] = {}
        for result in results:
            if isinstance(result, MediamatchError):
                raise result
            signals.update(result)
        return {s.name: signals[s.name] for s in types if s.name in signals}

    async def searcher_statuses(self) -> dict[str, dict]:
        """Per signal type: the version its slots serve, entries and live delta summed over slots."""
        handles = [h for group in self.searchers.values() for h in group]
        replies = await asyncio.gather(*(h.status.remote() for h in handles))
        out = {}
        for name in (s.name for s in self.served):
            slots = [reply[name] for reply in replies if name in reply]
            out[name] = {
                "version": slots[0]["version"],
                "count": sum(s["count"] for s in slots),
                "live_delta": sum(s["live_delta"] for s in slots),
                "ready": all(s["ready"] for s in slots),
                "reason": "; ".join(s["reason"] for s in slots if not s["ready"]),
            }
        return out

    def item_of(self, body: Upload | BaseModel) -> tuple[bytes | str, str]:
        """The content and content type of an uploaded item, or of a JSON body's text."""
        if isinstance(body, Upload):
            return body.data, upload_content_type(body.data, body.filename, body.media_type, body.fields.get("content_type") or None)
        return body.text, "text"

    async def new_entry(self, bank: str, content: bytes | str, content_type: str, metadata: dict) -> Entry:
        """An entry with every served signal of the media (computed before anything is stored)."""
        kept = [s for s in self.stored if content_type in s.content_types]
        signals = await self.compute(content, content_type, self.wanted_types(content_type, None) + kept)
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


def fused_type(served: set[str], verifier: Any) -> FusedType | None:
    """The photo decision's `fused` type: when photo candidates are verified and the served model
    stores a fusion with a threshold over signals this service has (its `keypoints` from the verifier)."""
    if verifier is None or "image_embedding" not in served:
        return None
    fusion = get_signal_type("image_embedding").config.fusion
    if fusion is None or fusion.threshold is None or not set(fusion.scales) <= served | {"keypoints"}:
        return None
    return FusedType(fusion)


class Coalesced:
    """`await it()`: `fn()` run in a thread, begun after the call (so it sees every change made
    before: a request's catalog refresh keeps read-your-writes across replicas), and shared by
    the calls that arrive while an earlier run is still going (one store read for them all,
    not one each)."""

    def __init__(self, fn):
        self.fn = fn
        self.next: asyncio.Task | None = None  # the run that calls arriving now will share
        self.running: asyncio.Task | None = None

    async def __call__(self):
        if self.next is None:
            self.next = asyncio.ensure_future(self._after(self.running))
        return await asyncio.shield(self.next)

    async def _after(self, previous: asyncio.Task | None):
        if previous is not None:
            await asyncio.wait([previous])
        self.next, self.running = None, asyncio.current_task()  # calls arriving from now need a later run
        return await asyncio.to_thread(self.fn)


class InProcess:
    """A deployment's class run inside this replica, called as its handle is (`x.method.remote(...)`,
    awaited): the same code without the hop, for the stages the `co_located` layout keeps here."""

    def __init__(self, instance: Any):
        self.instance = instance

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.instance, name)
        return SimpleNamespace(remote=method if inspect.iscoroutinefunction(method) else functools.partial(asyncio.to_thread, method))
