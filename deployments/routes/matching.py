"""Hashing and matching: the signals of an item, and every banked entry it matches."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request

from mediamatch.platform.auth import Principal
from mediamatch.platform.errors import InvalidInput, MediamatchError, NotFound
from mediamatch.platform.fusion import FUSED, FusedType
from mediamatch.platform.signals import SignalType, get_signal_type
from mediamatch.platform.signals.keypoints import inlier_distance

from .. import metrics
from ..http import IngressDep, Upload, csv_field, either_body, read_request
from ..models import HashJSON, HashResult, Match, MatchJSON, MatchResult, PostPart, SignalTypeOut

router = APIRouter(tags=["matching"])


@router.get("/v1/signal-types")
async def signal_types(request: Request, ingress: IngressDep) -> dict[str, list[SignalTypeOut]]:
    await ingress.principal(request)
    return {
        "signal_types": [
            SignalTypeOut(name=s.name, content_types=sorted(s.content_types), index_kind=s.index_kind, unit=s.unit,
                          default_threshold=s.default_threshold, threshold=ingress.threshold(s))
            for s in [*ingress.served, *ingress.stored]
        ] + ([SignalTypeOut(name=FUSED, content_types=list(ingress.fused.content_types), index_kind=ingress.fused.index_kind, unit=ingress.fused.unit,
                            default_threshold=ingress.fused.default_threshold, threshold=ingress.threshold(ingress.fused),
                            params=ingress.fused.fusion.model_dump())] if ingress.fused else [])
    }


@router.post("/v1/hash", openapi_extra=either_body(HashJSON, ("file", "content_type")))
async def hash(request: Request, ingress: IngressDep) -> HashResult:
    (await ingress.principal(request)).require_reader()
    body = await read_request(request, HashJSON, ingress.settings.limits.max_upload_bytes)
    content, content_type = ingress.item_of(body)
    signals = await ingress.compute(content, content_type, ingress.wanted_types(content_type, None))
    return HashResult(
        content_type=content_type,
        signals={n: s.value for n, s in signals.items() if s.value is not None},
        quality={n: s.quality for n, s in signals.items() if s.quality is not None},
    )


@router.post("/v1/match", openapi_extra=either_body(MatchJSON, ("file", "content_type", "banks", "signal_types")))
async def match(request: Request, ingress: IngressDep) -> MatchResult:
    started = time.perf_counter()
    who = await ingress.principal(request)
    who.require("match")
    body = await read_request(request, MatchJSON, ingress.settings.limits.max_upload_bytes)
    if isinstance(body, Upload):
        banks, requested = csv_field(body.fields, "banks"), csv_field(body.fields, "signal_types")
        parts = [(None, *ingress.item_of(body), None)]
    else:
        banks, requested = body.banks, body.signal_types
        parts = parts_of(ingress, body)
    is_post = not isinstance(body, Upload) and body.post is not None
    return await match_parts(ingress, who, parts, banks, requested, is_post, started)


async def match_parts(ingress, who: Principal, parts, banks: list[str] | None, requested: list[str] | None,
                      is_post: bool = False, started: float | None = None) -> MatchResult:
    """Every banked entry that the parts (see `parts_of`) match, in the banks `who` may search."""
    started = time.perf_counter() if started is None else started
    named, banks = banks, who.scope(banks)  # only granted banks are searched
    seq = await ingress.caught_up()  # searchers apply at least this much of the catalog
    unknown = [bank for bank in named or () if bank not in ingress.catalog.banks]
    if unknown:
        raise NotFound(f"no bank named {unknown[0]!r}")
    results = await asyncio.gather(*(match_part(ingress, name, content, ctype, raw, banks, requested, seq) for name, content, ctype, raw in parts))
    signals, matches, versions = {}, [], {}
    for part_signals, part_matches, part_versions in results:
        signals.update(part_signals)
        matches += part_matches
        versions.update(part_versions)
    matches.sort(key=lambda m: (-m.score, m.distance))
    for m in matches:
        metrics.MATCHES.labels(m.signal_type, m.bank).inc()
    verdict = {"matched": bool(matches), "parts": sorted({m.part for m in matches if m.part})} if is_post else None
    content_type = "post" if is_post else parts[0][2]
    return MatchResult(content_type=content_type, signals=signals, matches=matches, index_versions=versions,
                       took_ms=round((time.perf_counter() - started) * 1000, 2), verdict=verdict)


def parts_of(ingress, body: MatchJSON) -> list[tuple[str | None, str | None, str, dict | None]]:
    """(part name, content, content type, raw signals) of each thing to match."""
    if body.text is not None:
        return [(None, body.text, "text", None)]
    if body.signals is not None:
        content_type, signals = ingress.parse_signals(body.signals, body.content_type)
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
            out.append((name, None, *ingress.parse_signals(part.signals, part.content_type)))
    return out


async def match_part(ingress, part, content, content_type, raw, banks, requested, seq):
    if raw is None:
        computed = await ingress.compute(content, content_type, ingress.wanted_types(content_type, requested), query=True)
        values = {n: s.value for n, s in computed.items() if s.value is not None}
    else:
        values = {n: v for n, v in raw.items() if not requested or n in requested}
    verifying = ingress.verifier is not None and content_type == "photo" and isinstance(content, bytes) and (not requested or "keypoints" in requested)
    found = await search(ingress, {n: v for n, v in values.items() if n in ingress.served_names}, banks, seq, verifying)
    matches, versions = [], {}
    for name, (version, hits) in found.items():
        versions[name] = version
        matches += to_matches(ingress, get_signal_type(name), hits, part)
    if verifying:
        candidates = verification_candidates(ingress, found)
        if candidates:
            found["keypoints"] = (None, await verified(ingress, content, candidates, seq))
            matches += to_matches(ingress, get_signal_type("keypoints"), found["keypoints"][1], part)
        fused = ingress.fused
        if fused is not None and (not requested or set(fused.fusion.scales) <= set(requested)):
            matches += fused_matches(ingress, fused, found, part)
    return {n: get_signal_type(n).shown(v) for n, v in values.items()}, matches, versions


def verification_candidates(ingress, found: dict[str, tuple]) -> dict[str, str]:
    """Entry id -> bank of each searched signal's nearest `verify.candidates` within its candidate
    radius (the service's own, whatever a bank's threshold: what is verified is the service's choice)."""
    candidates: dict[str, str] = {}
    for name, (_, hits) in found.items():
        radius = ingress.settings.verify.candidate_radius(name, ingress.threshold(get_signal_type(name)))
        candidates.update((h[0], h[1]) for h in [h for h in hits if h[2] <= radius][: ingress.settings.verify.candidates])
    return candidates


async def verified(ingress, content: bytes, candidates: dict[str, str], seq: int) -> list[tuple]:
    """The candidates (entry id -> bank) whose stored keypoints the query fits: (entry id, bank,
    `inlier_distance`, None) hits, nearest first."""
    started = time.perf_counter()
    fits = await ingress.verifier.verify.remote({"content": content, "candidates": list(candidates), "min_seq": seq})
    metrics.SEARCH_SECONDS.labels("keypoints").observe(time.perf_counter() - started)
    if isinstance(fits, MediamatchError):
        raise fits
    return sorted(((e, candidates[e], inlier_distance(f["inliers"]), None) for e, f in fits.items() if f["inliers"]), key=lambda h: h[2])


def fused_matches(ingress, fused: FusedType, found: dict[str, tuple], part: str | None) -> list[Match]:
    """The photo decision: every entry whose evidence over the photo signals (`found`, the
    verifier's fits among them) the calibrated fusion accepts, as a `fused` match carrying that
    evidence and the transform of the dihedral PDQ form that found it."""
    banks = {h[0]: h[1] for _, hits in found.values() for h in hits}
    turns = {h[0]: h[3] for h in reversed(found.get("pdq", (None, []))[1])}  # the nearest dihedral form's
    evidence = fused.fusion.gathered({name: [(h[0], h[2]) for h in hits] for name, (_, hits) in found.items()})
    scores = fused.fusion.scores(list(evidence.values())) if evidence else []
    hits = sorted(((e, banks[e], round(1.0 - float(p), 6), turns.get(e)) for e, p in zip(evidence, scores)), key=lambda h: h[2])
    return to_matches(ingress, fused, hits, part, evidence)


async def search(ingress, values: dict[str, Any], banks: list[str] | None, seq: int, candidates: bool = False) -> dict[str, tuple[str | None, list]]:
    """Signal values through every slot of the searchers that hold them, one call per slot for
    all the values its group holds; per signal type, the version served and the hits merged
    over slots, nearest first (with `candidates`: also the nearest within the verifier's looser
    radius, `verify.radius`, to verify; `to_matches` keeps each type's threshold)."""
    scope = banks if banks is not None else list(ingress.catalog.banks)
    k = ingress.settings.serve.max_matches
    if candidates:
        k = max(k, ingress.settings.verify.candidates)
    calls = []
    for group, handles in ingress.searchers.items():
        searches = []
        for name in (n for n in group if n in values):
            signal_type = get_signal_type(name)
            radius = max([ingress.threshold(signal_type, b) for b in scope], default=ingress.threshold(signal_type))
            if candidates:
                radius = ingress.settings.verify.candidate_radius(name, radius)
            searches.append({"signal_type": name, "values": [values[name]], "k": k, "radius": radius, "banks": banks, "min_seq": seq})
        if searches:
            calls.append((searches, handles))
    replies = await asyncio.gather(*(timed_search(handle, searches) for searches, handles in calls for handle in handles))
    found, i = {}, 0
    for searches, handles in calls:
        slots, i = replies[i : i + len(handles)], i + len(handles)
        for j, one in enumerate(searches):
            hits = sorted((h for answers in slots for h in answers[j]["hits"][0]), key=lambda h: h[2])[:k]
            found[one["signal_type"]] = (slots[0][j]["version"], hits)
    return found


async def timed_search(handle, searches: list[dict]) -> list[dict]:
    started = time.perf_counter()
    answers = await handle.search.remote(searches)
    for one in searches:
        metrics.SEARCH_SECONDS.labels(one["signal_type"]).observe(time.perf_counter() - started)
    return answers


def to_matches(ingress, signal_type: SignalType | FusedType, hits, part: str | None, evidence: dict[str, dict] | None = None) -> list[Match]:
    """The (entry id, bank, distance, transform) hits within the bank's threshold, as matches
    with each entry's labels and metadata (`evidence`: per entry, what a `fused` match weighed)."""
    catalog, out = ingress.catalog, []
    for entry_id, bank, distance, transform in hits:
        threshold = ingress.threshold(signal_type, bank)
        if distance > threshold:  # a verification candidate, or a stricter bank
            continue
        entries = catalog.entries.get(bank)
        entry = entries.get(entry_id, signals=False) if entries is not None else None
        if entry is None:  # deleted since the searcher looked
            continue
        out.append(Match(bank=bank, entry_id=entry_id, signal_type=signal_type.name, distance=distance,
                         score=round(signal_type.score(distance), 6), threshold=threshold,
                         labels=_labels(catalog.banks.get(bank, {}).get("labels", []), entry.get("labels")), metadata=entry.get("metadata", {}),
                         part=part, transform=transform, evidence=evidence.get(entry_id) if evidence else None))
    return out


def _labels(bank_labels: list[str], entry_labels: list[str] | None) -> list[str]:
    """The bank's labels, then the entry's own (an imported list's), each once."""
    return list(dict.fromkeys([*bank_labels, *(entry_labels or ())])) if entry_labels else bank_labels
