"""Match-quality evaluation of photo signals: seeded edited copies, distractors, µAP.

Originals are banked; every original is edited by every edit of `models.edits.EVAL_EDITS`
to make the queries; distractor images (never banked) are edited the same way and queried
too. Each query returns scored candidates per signal type (with thresholds opened wide, so
ranking, not the threshold, decides). Metrics follow the 2021 Image Similarity Challenge:
all (query, reference, score) predictions are pooled and ranked globally, and

    µAP = sum over ranks i of precision@i * [prediction i is correct] / (number of true pairs)

so a true pair never predicted counts as a miss. Recall at precision P is the largest recall
of a prefix of that ranking whose precision is at least P; its score is the threshold to use.
"Combined" ranks each pair by the best of its signals' threshold-relative scores.

Two ways to run queries (`Matcher`): through a running service's HTTP API (`ServiceMatcher`,
the real match path) or in this process with the same signal code and exact indexes
(`LocalMatcher`, used by the training job to evaluate a model before it is recorded).
"""

from __future__ import annotations

import io
import json
import random
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Protocol, Sequence

import numpy as np
from PIL import Image

from .errors import InvalidInput, MediamatchError
from .index import IndexParams, Shard
from .media import open_image
from .models.edits import EVAL_EDITS, PDQ_FRIENDLY
from .settings import LimitSettings
from .signals import SignalType, get_signal_type

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MAX_SIDE = 512  # originals are scaled down to this first: the edits then take milliseconds
MIN_SIDE = 64  # smaller images (icons, glyphs) are skipped: too little to copy
SAME_PICTURE = 10  # PDQ bits: closer images count as one picture
Progress = Callable[[float, str], None]
Candidate = tuple[str, float]  # reference id, distance


@dataclass
class Query:
    image: bytes
    edit: str
    truth: str | None  # the reference it copies; None for a distractor


@dataclass
class Ranking:
    """Pooled predictions of one signal (or the combination), best first."""

    name: str
    scores: np.ndarray
    correct: np.ndarray
    positives: int
    distances: np.ndarray = field(default_factory=lambda: np.zeros(0))

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

    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        hits = np.cumsum(self.correct)
        return hits / max(1, self.positives), hits / np.arange(1, len(hits) + 1)


# -- images and queries ------------------------------------------------------------------------
def thumbnail(data: bytes, limits: LimitSettings = LimitSettings(), side: int = MAX_SIDE) -> Image.Image:
    """An image decoded as the service decodes it, scaled down to at most `side` pixels."""
    image = open_image(data, limits.max_image_pixels)
    image.thumbnail((side, side))
    return image


def load_images(source: str, limit: int | None = None, seed: int = 0) -> list[tuple[str, Image.Image]]:
    """Decodable images of at least MIN_SIDE pixels a side under a folder or object-store prefix
    (name, image), in a seeded order. A copy of an earlier image (the same bytes, or a PDQ hash
    within SAME_PICTURE bits) is skipped: a distractor must not be a copy of an original."""
    from .storage import ObjectStore, sha256_hex

    store = ObjectStore(source)
    keys = [k for k in store.list() if k.lower().endswith(IMAGE_SUFFIXES)]
    random.Random(seed).shuffle(keys)
    pdq = get_signal_type("pdq")
    images, seen, hashes = [], set(), []
    for key in keys:
        if limit is not None and len(images) >= limit:
            break
        data = store.get(key)
        digest = sha256_hex(data)
        try:
            image = thumbnail(data)
        except MediamatchError:
            continue
        if min(image.size) < MIN_SIDE or digest in seen:
            continue
        value = pdq.compute_image(image.copy()).value
        if value is not None and any(pdq.distance(value, h) <= SAME_PICTURE for h in hashes):
            continue
        seen.add(digest)
        if value is not None:
            hashes.append(value)
        images.append((key, image))
    return images


def encode(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def make_queries(originals: Sequence[Image.Image], ids: Sequence[str], distractors: Sequence[Image.Image], seed: int,
                 edits: Iterable[str] = tuple(EVAL_EDITS)) -> list[Query]:
    """Every original and every distractor under every edit; overlays draw from the distractors."""
    pool = list(distractors) or list(originals)
    queries = []
    for name in edits:
        edit = EVAL_EDITS[name]
        for i, (image, truth) in enumerate([*zip(originals, ids), *((d, None) for d in distractors)]):
            rng = random.Random(f"{seed}/{name}/{i}")
            queries.append(Query(encode(edit(image, rng, pool)), name, truth))
    return queries


# -- matching ------------------------------------------------------------------------------------
class Matcher(Protocol):
    signal_types: list[str]

    def bank(self, images: Sequence[bytes]) -> list[str]: ...

    def match(self, image: bytes) -> dict[str, list[Candidate]]: ...

    def threshold(self, signal_type: str) -> float: ...

    def close(self) -> None: ...


class LocalMatcher:
    """The service's signal code and exact indexes, in this process."""

    def __init__(self, types: Sequence[SignalType], limits: LimitSettings = LimitSettings(), k: int = 10):
        self.types = list(types)
        self.signal_types = [t.name for t in self.types]
        self.limits, self.k = limits, k
        self.shards: dict[str, Shard] = {}

    def bank(self, images: Sequence[bytes]) -> list[str]:
        ids = [f"ref{i}" for i in range(len(images))]
        for st in self.types:
            signals = st.compute_batch(list(images), self.limits)
            rows = [(i, s.value) for i, s in zip(ids, signals) if s.value is not None]
            kind = {"binary": "binary_flat", "float": "flat", "exact": "exact"}[st.index_kind]
            self.shards[st.name] = Shard.build(IndexParams(type=kind, dim=st.dim), [r[0] for r in rows], st.encode([r[1] for r in rows]), None)
        return ids

    def match(self, image: bytes) -> dict[str, list[Candidate]]:
        out = {}
        for st in self.types:
            signal = st.compute(image, self.limits)
            if signal.value is None:
                out[st.name] = []
                continue
            radius = st.dim if st.index_kind == "binary" else 2.0
            out[st.name] = self.shards[st.name].search(st.encode([signal.value]), self.k, radius)[0]
        return out

    def threshold(self, signal_type: str) -> float:
        return next(t for t in self.types if t.name == signal_type).default_threshold

    def close(self) -> None:
        pass


class ServiceMatcher:
    """A running service, through its HTTP API: a temporary bank with thresholds opened wide,
    deleted at the end (needs an admin token when the service has tokens)."""

    def __init__(self, client, signal_types: Sequence[str]):
        self.client, self.signal_types = client, list(signal_types)
        served = {s["name"]: s for s in client.call("GET", "/v1/signal-types")["signal_types"]}
        missing = [n for n in self.signal_types if n not in served]
        if missing:
            raise InvalidInput(f"the service does not serve {', '.join(missing)}")
        self.thresholds = {n: float(served[n]["threshold"]) for n in self.signal_types}
        self.bank_name = f"eval-{secrets.token_hex(4)}"
        wide = {n: (get_signal_type(n).dim if get_signal_type(n).index_kind == "binary" else 2.0) for n in self.signal_types}
        client.call("POST", "/v1/banks", json={"name": self.bank_name, "description": "mediamatch eval (temporary)", "thresholds": wide})

    def bank(self, images: Sequence[bytes]) -> list[str]:
        return [self.client.call("POST", f"/v1/banks/{self.bank_name}/entries", files={"file": ("ref.png", data)})["entry_id"] for data in images]

    def match(self, image: bytes) -> dict[str, list[Candidate]]:
        result = self.client.call("POST", "/v1/match", retries=3, files={"file": ("query.png", image)},
                                  data={"banks": self.bank_name, "signal_types": ",".join(self.signal_types)})
        out: dict[str, list[Candidate]] = {n: [] for n in self.signal_types}
        for m in result["matches"]:
            out[m["signal_type"]].append((m["entry_id"], float(m["distance"])))
        return out

    def threshold(self, signal_type: str) -> float:
        return self.thresholds[signal_type]

    def close(self) -> None:
        self.client.call("DELETE", f"/v1/banks/{self.bank_name}")


# -- the evaluation ------------------------------------------------------------------------------
@dataclass
class EvalResult:
    rankings: dict[str, Ranking]  # per signal type, and "combined"
    per_edit: dict[str, dict[str, Ranking]]  # edit -> name -> ranking of that edit's queries (+ distractors)
    thresholds: dict[str, float]  # the matcher's thresholds used by "combined"
    counts: dict[str, int]

    def summary(self) -> dict:
        rows = {}
        for name, r in self.rankings.items():
            r90, _, _ = r.recall_at_precision(0.90)
            r99, score99, distance99 = r.recall_at_precision(0.99)
            rows[name] = {"micro_ap": round(r.micro_ap(), 4), "recall_at_p90": round(r90, 4), "recall_at_p99": round(r99, 4),
                          "score_at_p99": score99, "distance_at_p99": distance99}
        edits = {e: {n: {"micro_ap": round(r.micro_ap(), 4), "recall_at_p99": round(self._recall_at(n, r), 4)} for n, r in by.items()}
                 for e, by in self.per_edit.items()}
        return {"counts": self.counts, "thresholds": self.thresholds, "signals": rows, "per_edit": edits}

    def _recall_at(self, name: str, ranking: Ranking) -> float:
        """Recall of one edit's queries at the whole suite's precision-0.99 score threshold."""
        _, score, _ = self.rankings[name].recall_at_precision(0.99)
        if score is None or not ranking.positives:
            return 0.0
        return float(ranking.correct[ranking.scores >= score].sum() / ranking.positives)


def relative_score(distance: float, threshold: float) -> float:
    """1 at distance 0, 0.5 at the signal's threshold, 0 at twice the threshold: comparable across signals."""
    return float(min(1.0, max(0.0, 1.0 - 0.5 * distance / threshold))) if threshold > 0 else float(distance == 0)


def evaluate(originals: Sequence[Image.Image], distractors: Sequence[Image.Image], matcher: Matcher, seed: int = 0,
             edits: Iterable[str] = tuple(EVAL_EDITS), progress: Progress | None = None) -> EvalResult:
    report = progress or (lambda fraction, message: None)
    report(0.0, f"banking {len(originals)} originals")
    ids = matcher.bank([encode(im) for im in originals])
    queries = make_queries(originals, ids, distractors, seed, edits)
    names = list(matcher.signal_types)
    thresholds = {n: matcher.threshold(n) for n in names}
    predictions: list[tuple[int, str, str, float]] = []  # query, signal, reference, distance
    for q, query in enumerate(queries):
        for name, candidates in matcher.match(query.image).items():
            predictions.extend((q, name, ref, d) for ref, d in candidates)
        if q % 20 == 0:
            report((q + 1) / len(queries), f"query {q + 1}/{len(queries)}")
    report(1.0, f"{len(queries)} queries")
    truths = {q: query.truth for q, query in enumerate(queries)}

    def ranking(name: str, chosen: set[int]) -> Ranking:
        positives = sum(1 for q in chosen if truths[q] is not None)
        if name == "combined":  # best signal per (query, reference)
            best: dict[tuple[int, str], float] = {}
            for q, signal, ref, d in predictions:
                if q in chosen:
                    best[(q, ref)] = max(best.get((q, ref), 0.0), relative_score(d, thresholds[signal]))
            rows = [(s, truths[q] == ref, 0.0) for (q, ref), s in best.items()]
        else:
            st = get_signal_type(name)
            rows = [(st.score(d), truths[q] == ref, d) for q, signal, ref, d in predictions if signal == name and q in chosen]
        rows.sort(key=lambda r: -r[0])
        return Ranking(name, np.array([r[0] for r in rows]), np.array([r[1] for r in rows], dtype=bool), positives,
                       np.array([r[2] for r in rows]))

    everything = set(range(len(queries)))
    all_names = names + (["combined"] if len(names) > 1 else [])
    per_edit = {}
    for edit in dict.fromkeys(query.edit for query in queries):
        chosen = {q for q in everything if queries[q].edit == edit}  # its copies and its edited distractors
        per_edit[edit] = {n: ranking(n, chosen) for n in all_names}
    counts = {"originals": len(originals), "distractors": len(distractors), "queries": len(queries),
              "true_pairs": sum(1 for t in truths.values() if t is not None), "edits": len(per_edit)}
    return EvalResult({n: ranking(n, everything) for n in all_names}, per_edit, thresholds, counts)


# -- the report ----------------------------------------------------------------------------------
def write_report(result: EvalResult, folder: Path, title: str, notes: Sequence[str] = ()) -> list[Path]:
    """eval.md (summary and per-edit tables), eval.png (precision-recall) and eval.json."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    summary = result.summary()
    names = list(result.rankings)
    lines = [f"# {title}", "", *notes, "" if notes else "",
             "| | " + " | ".join(f"{k}" for k in summary["counts"]) + " |", "|---" * (len(summary["counts"]) + 1) + "|",
             "| count | " + " | ".join(str(v) for v in summary["counts"].values()) + " |", "",
             "| signal | µAP | recall @ precision 0.90 | recall @ precision 0.99 | threshold @ 0.99 (distance) |", "|---|---|---|---|---|"]
    for name, row in summary["signals"].items():
        at = "-" if row["distance_at_p99"] is None or name == "combined" else f"{row['distance_at_p99']:.4g}"
        lines.append(f"| {name} | {row['micro_ap']:.3f} | {row['recall_at_p90']:.3f} | {row['recall_at_p99']:.3f} | {at} |")
    lines += ["", "Per edit: µAP of that edit's queries (the edited copies and the edited distractors), and the "
              "copies' recall at the whole suite's precision-0.99 threshold. Edits PDQ is built for: " + ", ".join(PDQ_FRIENDLY) + ".", "",
              "| edit | " + " | ".join(f"{n} µAP | {n} R@P99" for n in names) + " |", "|---" * (2 * len(names) + 1) + "|"]
    for edit, row in summary["per_edit"].items():
        lines.append(f"| {edit} | " + " | ".join(f"{row[n]['micro_ap']:.3f} | {row[n]['recall_at_p99']:.3f}" for n in names) + " |")
    paths = [folder / "eval.md", folder / "eval.png", folder / "eval.json"]
    paths[0].write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, r in result.rankings.items():
        recall, precision = r.curve()
        ax.plot(recall, precision, label=f"{name} (µAP {r.micro_ap():.3f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)
    paths[2].write_text(json.dumps(summary, indent=1))
    return paths


def calibrated_threshold(result: EvalResult, signal_type: str, precision: float = 0.99) -> float | None:
    """The distance threshold that keeps `precision` on this evaluation (None if never reached)."""
    return result.rankings[signal_type].recall_at_precision(precision)[2]


def split(images: list, originals: int, distractors: int) -> tuple[list, list]:
    if len(images) < originals + distractors:
        raise InvalidInput(f"{len(images)} images, fewer than {originals} originals + {distractors} distractors")
    return images[:originals], images[originals : originals + distractors]
