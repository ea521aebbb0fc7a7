"""What every content type's evaluation shares: seeded queries, two ways to match them, and the
pooled ranking metrics.

A `Material` is what one content type's module (photo, video, audio, text) makes from its
sources: the items to bank and a stream of seeded queries, each an edited copy of a banked item
(its `truth`) or of a never-banked distractor (no truth: anything it returns is a false match).
`evaluate_material` banks the items through a `Matcher`, queries everything with thresholds
opened wide (so ranking, not the threshold, decides), and pools every (query, reference, score)
prediction of each signal type. Metrics follow the 2021 Image Similarity Challenge: predictions
are ranked globally, and

    µAP = sum over ranks i of precision@i * [prediction i is correct] / (number of true pairs)

so a true pair never predicted counts as a miss. Recall at precision P is the largest recall
of a prefix of that ranking whose precision is at least P; its score is the threshold to use.
"Combined" ranks each (query, reference) pair by one calibrated fusion of its signals'
distances (`platform/fusion.py`): the matcher's stored one (a model's), else cross-fitted here,
each half of the material (split by banked item and by distractor) scored by the fusion fitted
on the other half, so no pair is scored by a fusion that saw it; its served decision is that
fusion's threshold. Beside the ranking, each signal's answers at its served threshold are
counted: what the service would really return. Where the matcher verifies photo candidates,
the retrieval recall of each edit is the share of its copies whose original was among them.

Two matchers: a running service through its HTTP API (`ServiceMatcher`, the real match path)
or this process with the same signal code, catalog and live index the searchers use
(`LocalMatcher`, also the training job's evaluation of a model before it is recorded).
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import time
import weakref
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Protocol, Sequence

import numpy as np

from ..errors import InvalidInput, MediamatchError
from ..fusion import FUSED, Fusion
from ..settings import LimitSettings, VerifySettings
from ..signals import SignalType, get_signal_type
from ..verify import verify_stored

Progress = Callable[[float, str], None]
Candidate = tuple[str, float]  # reference id, distance
Content = bytes | str  # media bytes, or a text
K = 10  # candidates per signal type and query
RETRIEVED = "retrieved"  # a match answer's key, beside the signal types': the candidates it verified (see LocalMatcher)


@dataclass
class Query:
    content: Content
    edit: str
    truth: int | None  # index of the banked item it copies; None for a distractor
    item: str = ""  # the name of the item it was made from


@dataclass
class Material:
    """One content type's evaluation: the items to bank, and the seeded queries (made lazily:
    `queries()` yields `query_count` of them)."""

    content_type: str
    references: list[Content]
    names: list[str]
    queries: Callable[[], Iterator[Query]]
    query_count: int
    distractors: int
    notes: list[str] = field(default_factory=list)


@dataclass
class Ranking:
    """Pooled predictions of one signal (or the combination), best first; `within`: the pair is
    within the served threshold (the service would answer it)."""

    name: str
    scores: np.ndarray
    correct: np.ndarray
    positives: int
    distances: np.ndarray = field(default_factory=lambda: np.zeros(0))
    within: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def micro_ap(self) -> float:
        if not self.positives or not len(self.correct):
            return 0.0
        hits = np.cumsum(self.correct)
        precision = hits / np.arange(1, len(hits) + 1)
        return float(np.sum(precision * self.correct) / self.positives)

    def recall_at_precision(self, target: float) -> tuple[float, float | None, float | None]:
        """(recall, score threshold, distance threshold) of the longest prefix with precision >= target."""
        if not self.positives or not len(self.correct):
            return 0.0, None, None
        hits = np.cumsum(self.correct)
        ok = np.flatnonzero(hits / np.arange(1, len(hits) + 1) >= target)
        if not len(ok):
            return 0.0, None, None
        i = ok[-1]
        distance = float(self.distances[i]) if len(self.distances) else None
        return float(hits[i] / self.positives), float(self.scores[i]), distance

    def at_threshold(self) -> tuple[int, int]:
        """(true pairs, false pairs) answered at the served threshold."""
        if not len(self.within):
            return 0, 0
        return int(np.sum(self.correct & self.within)), int(np.sum(~self.correct & self.within))

    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        hits = np.cumsum(self.correct)
        return hits / max(1, self.positives), hits / np.arange(1, len(hits) + 1)


def wide_radius(signal_type: SignalType) -> float:
    """A threshold that lets every candidate through (ranking, not the threshold, decides)."""
    return float(signal_type.dim) if signal_type.index_kind == "binary" else 2.0


# -- matching ------------------------------------------------------------------------------------
class Matcher(Protocol):
    signal_types: list[str]

    def bank(self, items: Sequence[Content]) -> list[str]: ...

    def match(self, queries: Sequence[Content]) -> list[dict[str, list[Candidate]] | None]:
        """Per query, each signal type's candidates (None: the query was refused as media), and
        under RETRIEVED, where the matcher verifies photos, the candidates it verified."""

    def threshold(self, signal_type: str) -> float: ...

    def close(self) -> None: ...


class LocalMatcher:
    """The service's signal code, catalog and live index (exact, as a searcher's live delta),
    in this process: items are banked as catalog entries on a temporary local store, queries are
    computed as the service computes them (`compute_query`: pdq's dihedral forms, audio's speed
    variants) and searched as a searcher searches them (`LiveIndex.search_values`).

    With `keypoints` among the types, photo queries go through the service's verification stage
    too: each searched signal's nearest `verify.candidates` within `verify.radius` (or its
    threshold, if wider), as `routes/matching.py` takes them, are verified as the `Verifier`
    deployment verifies them (`verify.verify_stored` on their stored keypoints), and each fit
    with inliers is a `keypoints` candidate, at the service's distance (`inlier_distance`)."""

    def __init__(self, types: Sequence[SignalType], limits: LimitSettings = LimitSettings(), k: int = K, content_type: str = "photo",
                 verify: VerifySettings = VerifySettings(), fusion: Fusion | None = None):
        self.types = list(types)
        self.signal_types = [t.name for t in self.types]
        self.limits, self.k, self.content_type, self.verify, self.fusion = limits, k, content_type, verify, fusion
        self.verifying = content_type == "photo" and "keypoints" in self.signal_types
        self.folder = tempfile.mkdtemp(prefix="mediamatch-eval-")
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.folder, True)
        self.live: dict = {}

    @property
    def retrieval_k(self) -> int | None:
        return self.verify.candidates if self.verifying else None

    def candidate_radius(self, signal_type: str) -> float:
        """How far a searched signal's hit may be and still be verified (the route's search radius)."""
        return self.verify.candidate_radius(signal_type, self.threshold(signal_type))

    @property
    def evidence_radius(self) -> dict[str, float]:
        """Per searched signal, the farthest hit the service would see while verifying: the fusion's evidence."""
        return {st.name: self.candidate_radius(st.name) for st in self.types if st.index_kind != "stored"} if self.verifying else {}

    def signals(self, items: Sequence[Content], query: bool = False) -> list[dict | None]:
        """Per item, each type's value (None: no value); None for an item that is not valid media.
        A query has no stored-kind values (keypoints: the verifier takes the query's from its image)."""
        out: list[dict | None] = [{} for _ in items]
        for st in self.types:
            if query and st.index_kind == "stored":
                continue
            if query and st.query_form:
                values = [self._one(st.compute_query, item) for item in items]
            else:
                try:
                    values = [s.value for s in st.compute_batch(list(items), self.limits)]
                except MediamatchError:  # one bad item: find it
                    values = [self._one(st.compute, item) for item in items]
            for row, value in zip(out, values):
                if row is not None:
                    row[st.name] = value
            out = [None if v is _REFUSED else row for row, v in zip(out, values)]
        return out

    def _one(self, compute, item: Content):
        try:
            return compute(item, self.limits).value
        except MediamatchError:
            return _REFUSED

    def bank(self, items: Sequence[Content]) -> list[str]:
        rows = self.signals(items)
        if any(r is None for r in rows):
            raise InvalidInput(f"item {rows.index(None)} to bank is not a valid {self.content_type}")
        return self.bank_values(rows)

    def bank_values(self, rows: Sequence[dict]) -> list[str]:
        """Bank entries with these signal values (type name -> value or None) in one commit; their ids."""
        from ..catalog import Catalog, Entry
        from ..live import LiveIndex
        from ..storage import ObjectStore

        store = ObjectStore(self.folder)
        catalog = Catalog(store)
        catalog.create_bank("eval")
        entries = catalog.add_entries("eval", [Entry(bank="eval", content_type=self.content_type, signals={n: v for n, v in r.items() if v is not None})
                                               for r in rows])
        self.live = {st.name: LiveIndex(store, st) for st in self.types}
        return [e.entry_id for e in entries]

    def search(self, signal_type: str, values: Sequence, k: int, radius: float) -> list[list[Candidate]]:
        """Per value (None: no value, no candidates), up to k (entry id, distance) within `radius`, nearest first."""
        live = self.live[signal_type]
        asked = [v for v in values if v is not None]
        found = iter(live.search_values(asked, k, radius)[1] if asked else [])
        return [[(entry, float(d)) for entry, _, d, _ in next(found)] if v is not None else [] for v in values]

    def match(self, queries: Sequence[Content]) -> list[dict[str, list[Candidate]] | None]:
        rows = self.signals(queries, query=True)
        searched = [st for st in self.types if st.index_kind != "stored"]
        k = max(self.k, self.verify.candidates) if self.verifying else self.k
        found = {st.name: self.search(st.name, [r and r[st.name] for r in rows], k, wide_radius(st)) for st in searched}
        out = []
        for i, (query, row) in enumerate(zip(queries, rows)):
            hits = {name: found[name][i] for name in found}
            answer = None if row is None else {name: h[: self.k] for name, h in hits.items()}
            if answer is not None and self.verifying:
                answer.update(self.verified(query, hits))
            out.append(answer)
        return out

    def verified(self, query: bytes, hits: dict[str, list[Candidate]]) -> dict[str, list[Candidate]]:
        """The keypoints candidates of one photo query, and under RETRIEVED those it verified."""
        from ..signals.keypoints import inlier_distance

        candidates: dict[str, None] = {}
        for name, found in hits.items():
            radius = self.candidate_radius(name)
            candidates.update(dict.fromkeys([entry for entry, d in found if d <= radius][: self.verify.candidates]))
        stored = self.live["keypoints"].values(candidates)
        fits = verify_stored(query, stored, self.limits.max_image_pixels) if stored else {}
        keypoints = sorted(((e, inlier_distance(f.inliers)) for e, f in fits.items() if f.inliers), key=lambda c: c[1])
        return {"keypoints": keypoints, RETRIEVED: [(e, 0.0) for e in candidates]}

    def threshold(self, signal_type: str) -> float:
        return float(next(t for t in self.types if t.name == signal_type).default_threshold)

    def close(self) -> None:
        self._cleanup()


_REFUSED = object()


class ServiceMatcher:
    """A running service, through its HTTP API: a temporary bank with thresholds opened wide,
    deleted at the end (needs an admin token when the service has tokens). Files go up as
    multipart `file` with their `content_type`, texts as JSON `{"text": ...}`; `workers`
    requests at a time, so the service can batch its model calls."""

    retrieval_k: int | None = None  # the service does not say which candidates it verified

    def __init__(self, client, signal_types: Sequence[str], content_type: str = "photo", k: int = K, workers: int = 4):
        self.client, self.signal_types, self.content_type, self.k = client, list(signal_types), content_type, k
        served = {s["name"]: s for s in client.call("GET", "/v1/signal-types")["signal_types"]}
        missing = [n for n in self.signal_types if n not in served]
        if missing:
            raise InvalidInput(f"the service does not serve {', '.join(missing)}")
        # the service's photo decision, when it fuses these signals: "combined" is scored by it;
        # else the combination is cross-fitted on the evaluation (see evaluate_material)
        fused = served.get(FUSED, {}).get("params")
        self.fusion = Fusion(**fused) if fused and set(fused["scales"]) <= set(self.signal_types) else None
        self.evidence_radius = dict(self.fusion.radius) if self.fusion else {}
        self.thresholds = {n: float(served[n]["threshold"]) for n in self.signal_types}
        self.bank_name = f"eval-{secrets.token_hex(4)}"
        wide = {n: wide_radius(get_signal_type(n)) for n in self.signal_types}
        client.call("POST", "/v1/banks", json={"name": self.bank_name, "description": f"mediamatch eval of {content_type} (temporary)", "thresholds": wide})
        self.pool = ThreadPoolExecutor(workers)

    def _send(self, path: str, item: Content, fields: dict, retries: int = 0):
        if isinstance(item, str):
            return self.client.call("POST", path, retries=retries, json={"text": item, **fields})
        form = {k: ",".join(v) if isinstance(v, list) else v for k, v in fields.items()}
        return self.client.call("POST", path, retries=retries, files={"file": (self.content_type, item)}, data={**form, "content_type": self.content_type})

    def bank(self, items: Sequence[Content]) -> list[str]:
        path = f"/v1/banks/{self.bank_name}/entries"
        return [e["entry_id"] for e in self.pool.map(lambda item: self._send(path, item, {}), items)]

    def _match_one(self, item: Content) -> dict[str, list[Candidate]] | None:
        from ..client import ApiError

        try:
            result = self._send("/v1/match", item, {"banks": [self.bank_name], "signal_types": self.signal_types}, retries=3)
        except ApiError as exc:
            if exc.status in (413, 415, 422):  # not media the service takes: no answer
                return None
            raise
        out: dict[str, list[Candidate]] = {n: [] for n in self.signal_types}
        for m in sorted(result["matches"], key=lambda m: m["distance"]):
            if m["signal_type"] in out and len(out[m["signal_type"]]) < self.k:  # not `fused`: "combined" rescores the evidence
                out[m["signal_type"]].append((m["entry_id"], float(m["distance"])))
        return out

    def match(self, queries: Sequence[Content]) -> list[dict[str, list[Candidate]] | None]:
        return list(self.pool.map(self._match_one, queries))

    def threshold(self, signal_type: str) -> float:
        return self.thresholds[signal_type]

    def close(self) -> None:
        self.pool.shutdown()
        self.client.call("DELETE", f"/v1/banks/{self.bank_name}")


# -- the evaluation ------------------------------------------------------------------------------
@dataclass
class EvalResult:
    rankings: dict[str, Ranking]  # per signal type, and "combined"
    per_edit: dict[str, dict[str, Ranking]]  # edit -> name -> ranking of that edit's queries (+ distractors)
    thresholds: dict[str, float]  # the matcher's served thresholds
    counts: dict[str, int]
    content_type: str = "photo"
    notes: list[str] = field(default_factory=list)
    edit_counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # edit -> (copies, distractors)
    section: str = ""  # the report's name for it where a content type has two materials (photo: drawings, photographs)
    fusion: Fusion | None = None  # the combination fitted on every pair of this evaluation (to store with a model)
    combined_by: str = ""  # how "combined" was scored: the matcher's stored fusion, or cross-fitted here
    retrieval: dict[str, float] = field(default_factory=dict)  # edit -> share of its copies whose original was verified
    retrieval_k: int | None = None  # candidates verified per searched signal
    answers: "Answers | None" = None  # what the rankings were made of (to rank again: `rank`)

    @property
    def name(self) -> str:
        return self.section or self.content_type

    def summary(self) -> dict:
        rows = {}
        for name, r in self.rankings.items():
            r90, _, _ = r.recall_at_precision(0.90)
            r99, score99, distance99 = r.recall_at_precision(0.99)
            rows[name] = {"micro_ap": round(r.micro_ap(), 4), "recall_at_p90": round(r90, 4), "recall_at_p99": round(r99, 4),
                          "score_at_p99": score99, "distance_at_p99": distance99, **_served(r)}
        edits = {e: {n: {"micro_ap": round(r.micro_ap(), 4), "recall_at_p99": round(self._recall_at(n, r), 4), **_served(r)}
                     for n, r in by.items()} for e, by in self.per_edit.items()}
        return {"content_type": self.content_type, "counts": self.counts, "thresholds": self.thresholds, "signals": rows,
                "per_edit": edits, "edit_counts": {e: list(c) for e, c in self.edit_counts.items()}, "combined_by": self.combined_by,
                "retrieval_k": self.retrieval_k, "retrieval_recall": {e: round(r, 4) for e, r in self.retrieval.items()},
                "fusion": self.fusion.model_dump() if self.fusion else None}

    def _recall_at(self, name: str, ranking: Ranking) -> float:
        """Recall of one edit's queries at the whole suite's precision-0.99 score threshold."""
        _, score, _ = self.rankings[name].recall_at_precision(0.99)
        if score is None or not ranking.positives:
            return 0.0
        return float(ranking.correct[ranking.scores >= score].sum() / ranking.positives)


def _served(r: Ranking) -> dict:
    """Answers at the served threshold: true and false pairs, recall, precision (None: no answer)."""
    true, false = r.at_threshold()
    return {"answered_true": true, "answered_false": false, "recall_at_threshold": round(true / r.positives, 4) if r.positives else 0.0,
            "precision_at_threshold": round(true / (true + false), 4) if true + false else None}


def scaled(progress: Progress | None, start: float, end: float) -> Progress:
    """A progress callback covering [start, end] of `progress`'s range."""
    report = progress or (lambda fraction, message: None)
    return lambda fraction, message: report(start + (end - start) * fraction, message)


def fold_of(query: Query, ordinal: int) -> int:
    """Which half of the material a query belongs to for cross-fitting: by the banked item it
    copies, else by the distractor it was made from (its ordinal where unnamed)."""
    if query.truth is not None:
        return query.truth % 2
    return zlib.crc32(query.item.encode()) % 2 if query.item else ordinal % 2


@dataclass
class Pairs:
    """Every (query, reference) pair some signal answered, with each signal's distance for it."""

    queries: np.ndarray
    correct: np.ndarray
    evidence: list[dict[str, float]]


@dataclass
class Answers:
    """What a matcher answered for one material's queries: every (query, signal, reference
    index, distance) prediction, and per query its truth, edit, half (`fold_of`) and whether
    its original was among the candidates verified (None: not known)."""

    predictions: list[tuple[int, str, int, float]] = field(default_factory=list)
    truths: list[int | None] = field(default_factory=list)
    edits: list[str] = field(default_factory=list)
    folds: list[int] = field(default_factory=list)
    retrieved: list[bool | None] = field(default_factory=list)

    def pairs(self) -> Pairs:
        found: dict[tuple[int, int], dict[str, float]] = {}
        for q, signal, ref, d in self.predictions:
            evidence = found.setdefault((q, ref), {})
            evidence[signal] = min(d, evidence.get(signal, d))
        keys = list(found)
        return Pairs(np.array([q for q, _ in keys], dtype=int), np.array([self.truths[q] == ref for q, ref in keys], dtype=bool),
                     list(found.values()))


def fused_scores(pairs: Pairs, folds: np.ndarray, fusion: Fusion | None, radius: dict[str, float]) -> tuple[np.ndarray, np.ndarray, Fusion]:
    """Each pair's fused score and decision: by `fusion` when given (a model's stored one), else
    cross-fitted (each half of the queries scored by the fusion fitted on the other half); and
    the fusion fitted on every pair. `radius`: per signal, the farthest distance that is evidence."""
    everything = Fusion.fit(pairs.evidence, pairs.correct, radius)
    if fusion is not None:
        return fusion.scores(pairs.evidence), fusion.decide(pairs.evidence), everything
    scores, within = np.zeros(len(pairs.correct)), np.zeros(len(pairs.correct), dtype=bool)
    half = folds[pairs.queries] if len(pairs.queries) else np.zeros(0, dtype=int)
    for fold in (0, 1):
        fit_on, score = np.flatnonzero(half != fold), np.flatnonzero(half == fold)
        fitted = Fusion.fit([pairs.evidence[i] for i in fit_on], pairs.correct[fit_on], radius)
        mine = [pairs.evidence[i] for i in score]
        scores[score], within[score] = fitted.scores(mine), fitted.decide(mine)
    return scores, within, everything


def evaluate_material(material: Material, matcher: Matcher, progress: Progress | None = None, chunk: int = 16) -> EvalResult:
    """Bank the material's items, match every query, and rank the pooled predictions."""
    report = progress or (lambda fraction, message: None)
    kind = material.content_type
    report(0.0, f"{kind}: banking {len(material.references)} items")
    ids = matcher.bank(material.references)
    index_of = {entry: i for i, entry in enumerate(ids)}
    answers = Answers()
    refused = 0
    total = max(1, material.query_count)
    batch: list[Query] = []

    def flush() -> None:
        nonlocal refused
        for query, found in zip(batch, matcher.match([q.content for q in batch])):
            q = len(answers.truths)
            answers.truths.append(query.truth)
            answers.edits.append(query.edit)
            answers.folds.append(fold_of(query, q))
            verified = (found or {}).pop(RETRIEVED, None)
            known = query.truth is not None and verified is not None
            answers.retrieved.append(any(index_of.get(e) == query.truth for e, _ in verified) if known else None)
            if found is None:
                refused += 1
                continue
            for name, candidates in found.items():
                answers.predictions.extend((q, name, index_of[ref], d) for ref, d in candidates if ref in index_of)
        batch.clear()
        report(0.05 + 0.95 * len(answers.truths) / total, f"{kind}: query {len(answers.truths)}/{material.query_count}")

    report(0.05, f"{kind}: making and matching {material.query_count} queries")
    for query in material.queries():
        batch.append(query)
        if len(batch) >= chunk:
            flush()
    if batch:
        flush()
    names = list(matcher.signal_types)
    result = rank(answers, names, {n: matcher.threshold(n) for n in names}, getattr(matcher, "fusion", None),
                  getattr(matcher, "evidence_radius", {}), kind)
    result.counts = {"banked": len(ids), "distractors": material.distractors, **result.counts, "refused": refused}
    result.notes = list(material.notes)
    result.retrieval_k = getattr(matcher, "retrieval_k", None) if result.retrieval else None
    report(1.0, f"{kind}: {len(answers.truths)} queries")
    return result


def rank(answers: Answers, names: list[str], thresholds: dict[str, float], fusion: Fusion | None = None,
         radius: dict[str, float] | None = None, content_type: str = "photo") -> EvalResult:
    """The pooled rankings of every signal and, with more than one, of their fusion (`fused_scores`),
    over all the queries and per edit."""
    truths, predictions = answers.truths, answers.predictions
    multi = len(names) > 1
    pairs = answers.pairs()
    if multi:
        fused, fused_within, fitted = fused_scores(pairs, np.array(answers.folds, dtype=int), fusion, radius or {})

    def ranking(name: str, chosen: np.ndarray) -> Ranking:
        positives = sum(1 for q in np.flatnonzero(chosen) if truths[q] is not None)
        if name == "combined":
            rows = [(fused[i], pairs.correct[i], 0.0, fused_within[i]) for i in np.flatnonzero(chosen[pairs.queries])]
        else:
            st = get_signal_type(name)
            rows = [(st.score(d), truths[q] == ref, d, d <= thresholds[name]) for q, signal, ref, d in predictions if signal == name and chosen[q]]
        rows.sort(key=lambda r: -r[0])
        return Ranking(name, np.array([r[0] for r in rows]), np.array([r[1] for r in rows], dtype=bool), positives,
                       np.array([r[2] for r in rows]), np.array([r[3] for r in rows], dtype=bool))

    all_names = names + (["combined"] if multi else [])
    edit_array = np.array(answers.edits, dtype=object)
    everything = np.ones(len(truths), dtype=bool)
    per_edit, edit_counts, retrieval = {}, {}, {}
    for edit in dict.fromkeys(answers.edits):
        chosen = edit_array == edit  # its copies and its edited distractors
        per_edit[edit] = {n: ranking(n, chosen) for n in all_names}
        copies = sum(1 for q in np.flatnonzero(chosen) if truths[q] is not None)
        edit_counts[edit] = (copies, int(chosen.sum()) - copies)
        known = [answers.retrieved[q] for q in np.flatnonzero(chosen) if answers.retrieved[q] is not None]
        if known:
            retrieval[edit] = float(np.mean(known))
    counts = {"queries": len(truths), "true_pairs": sum(1 for t in truths if t is not None), "edits": len(per_edit)}
    return EvalResult({n: ranking(n, everything) for n in all_names}, per_edit, thresholds, counts, content_type, [], edit_counts,
                      fusion=fitted if multi else None,
                      combined_by=("the model's stored fusion" if fusion is not None else "cross-fitted") if multi else "",
                      retrieval=retrieval, answers=answers)


@dataclass
class Job:
    """One content type to evaluate: its signal types, and how to load its material."""

    content_type: str
    signal_types: list[str]
    load: Callable[[], Material]
    section: str = ""  # see EvalResult.section


def run_jobs(jobs: Sequence[Job], make_matcher: Callable[[str, list[str]], Matcher], progress: Progress | None = None) -> list[EvalResult]:
    """Each job's material through a matcher of its own (closed after), in turn."""
    results = []
    for n, job in enumerate(jobs):
        part = scaled(progress, n / len(jobs), (n + 1) / len(jobs))
        started = time.perf_counter()
        part(0.0, f"{job.content_type}: loading the material")
        material = job.load()
        matcher = make_matcher(job.content_type, job.signal_types)
        try:
            result = evaluate_material(material, matcher, part)
        finally:
            matcher.close()
        result.counts["seconds"] = round(time.perf_counter() - started)
        result.section = job.section
        results.append(result)
    return results


def calibrated_threshold(result: EvalResult, signal_type: str, precision: float = 0.99) -> float | None:
    """The distance threshold that keeps `precision` on this evaluation (None if never reached)."""
    return result.rankings[signal_type].recall_at_precision(precision)[2]


def chosen_edits(wanted: Iterable[str] | None, suite: Sequence[str]) -> list[str]:
    """The suite's edits among `wanted`, in the suite's order; the whole suite when `wanted`
    names none of them (so one list can narrow some content types and leave the others whole)."""
    wanted = set(wanted or ())
    return [e for e in suite if e in wanted] or list(suite)


def query_rng(seed: int, edit: str, item: int) -> np.random.Generator:
    """The generator of one query's edit: the same whichever other edits and items are run."""
    return np.random.default_rng([seed, zlib.crc32(edit.encode()), item])
