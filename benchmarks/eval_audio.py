"""Evaluate the audio_fingerprint signal on real recordings nobody on this project made.

Material: speech rendered by espeak-ng from distinct passages of Debian documentation
(several voices and speeds), plus the longest distinct sound files of installed Debian
packages (tuxpaint stamps: recorded voices and sound effects).  Half is banked; every item
(banked or not) is edited and queried: re-encodes (mp3, ogg/vorbis, aac, opus), volume,
a 10-second excerpt, white noise, +-5 % speed, and combinations.  Queries of never-banked
items are distractors: any match they get is a false positive.

Everything goes through the service's path: banked values (`compute`) are entries of a
`Catalog` on a temporary local store, queries (`compute_query`) are answered by
`LiveIndex.search_bags` at the type's default threshold; the latency banks are postings
`Shard`s (as a published index version holds them) loaded into a `LiveIndex`.

    nice -n 15 .venv/bin/python benchmarks/eval_audio.py            # default: a few minutes
    nice -n 15 .venv/bin/python benchmarks/eval_audio.py --speech 20 --sounds 20 --no-ablation

Prints Markdown tables: precision/recall per edit at the chosen threshold, the speed-handling
ablation, the score distributions and lookup latency against bank size.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import av
import numpy as np

from mediamatch.platform.catalog import Catalog, Entry
from mediamatch.platform.index import IndexParams, Shard
from mediamatch.platform.live import LiveIndex
from mediamatch.platform.signals import audio as A
from mediamatch.platform.storage import ObjectStore

WORK_RATE = 22050
VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-us+f3", "en-gb+m3", "en-us+f2"]


# --------------------------------------------------------------------------- material


def passages(n: int, rng: np.random.Generator) -> list[str]:
    """`n` distinct ~400-600 character passages of documentation text (one per package)."""
    texts, seen = [], set()
    docs = sorted(glob.glob("/usr/share/doc/*/changelog.Debian.gz") + glob.glob("/usr/share/doc/*/README*"))
    rng.shuffle(docs)
    for path in docs:
        try:
            raw = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
            text = raw.decode("utf-8", "ignore")
        except OSError:
            continue
        text = re.sub(r"\S+@\S+|<[^>]*>|https?://\S+", " ", text)
        text = " ".join(re.sub(r"[^A-Za-z0-9.,;:!?' ()-]", " ", text).split())
        if len(text) < 800:
            continue
        start = int(rng.integers(0, max(1, len(text) - 700)))
        chunk = text[start : start + int(rng.integers(300, 460))]
        key = chunk[:60].lower()
        words = frozenset(chunk.lower().split())
        if key in seen or any(len(words & w) > 0.6 * len(words) for w in [s for s in seen if isinstance(s, frozenset)]):
            continue
        seen.add(key)
        seen.add(words)
        texts.append(chunk)
        if len(texts) == n:
            break
    return texts


def render_speech(n: int, rng: np.random.Generator, tmp: str) -> list[tuple[str, np.ndarray]]:
    items = []
    for i, text in enumerate(passages(n, rng)):
        voice = VOICES[i % len(VOICES)]
        speed = int(rng.integers(140, 200))
        wav = os.path.join(tmp, f"s{i}.wav")
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", wav, text], check=True, capture_output=True)
        items.append((f"espeak:{voice}:{speed}:{i}", decode(open(wav, "rb").read())))
    return items


def sound_files(n: int) -> list[tuple[str, np.ndarray]]:
    """The `n` longest distinct (by decoded audio) .ogg/.wav/.oga/.flac files under /usr/share."""
    paths = [p for ext in ("ogg", "oga", "wav", "flac") for p in glob.glob(f"/usr/share/**/*.{ext}", recursive=True)]
    paths = [p for p in paths if "backgrounds" not in p and "wallpaper" not in p and os.path.getsize(p) > 40_000]
    paths.sort(key=lambda p: (-os.path.getsize(p), p))
    items, seen = [], set()
    for p in paths:
        try:
            x = decode(open(p, "rb").read())
        except Exception:
            continue
        # copies under several names (w_/b_ chess pieces) differ only in tags: same audio
        key = (round(len(x) / WORK_RATE, 2), hashlib.md5(np.round(x[::97], 3).tobytes()).hexdigest())
        if key in seen or (key[0], None) in seen or len(x) < 3 * WORK_RATE:
            continue
        seen.add(key)
        seen.add((key[0], None))
        items.append((os.path.relpath(p, "/usr/share"), x))
        if len(items) == n:
            break
    return items


def decode(data: bytes) -> np.ndarray:
    return A.decode_audio(data, WORK_RATE, 3600)


# --------------------------------------------------------------------------- edits


def encode(x: np.ndarray, fmt: str, codec: str, rate: int = WORK_RATE, bit_rate: int | None = None, channels: int = 1) -> bytes:
    buf = io.BytesIO()
    layout = "mono" if channels == 1 else "stereo"
    with av.open(buf, "w", format=fmt) as out:
        options = {"strict": "experimental"} if codec == "vorbis" else {}
        stream = out.add_stream(codec, rate=rate, layout=layout, options=options)
        if bit_rate:
            stream.bit_rate = bit_rate
        if rate != WORK_RATE:
            x = A._resample(x, rate / WORK_RATE)
        planes = np.repeat(np.clip(x, -1, 1)[None, :], channels, axis=0).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(planes, format="fltp", layout=layout)
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def wav(x: np.ndarray) -> bytes:
    return encode(x, "wav", "pcm_s16le")


def excerpt(x: np.ndarray, seconds: float = 10.0) -> np.ndarray:
    n = min(len(x), int(seconds * WORK_RATE))
    start = (len(x) - n) // 2
    return x[start : start + n]


def noise(x: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    power = float(np.mean(x.astype(np.float64) ** 2))
    return x + rng.normal(0, np.sqrt(power / 10 ** (snr_db / 10)), len(x)).astype(np.float32)


def speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Played `factor` times faster (pitch and tempo)."""
    return A._resample(x, 1.0 / factor)


CODECS = {
    "mp3": lambda x: encode(x, "mp3", "libmp3lame", bit_rate=64_000),
    "ogg": lambda x: encode(x, "ogg", "vorbis", channels=2),
    "aac": lambda x: encode(x, "adts", "aac", bit_rate=48_000),
    "opus": lambda x: encode(x, "ogg", "libopus", rate=48_000, bit_rate=24_000),
}


def edits(rng: np.random.Generator) -> dict[str, callable]:
    return {
        "original (wav)": lambda x: wav(x),
        "mp3 64k": CODECS["mp3"],
        "ogg vorbis": CODECS["ogg"],
        "aac 48k": CODECS["aac"],
        "opus 24k": CODECS["opus"],
        "volume x0.3": lambda x: wav(0.3 * x),
        "volume x2 (clipped)": lambda x: wav(np.clip(2 * x, -1, 1)),
        "10 s excerpt": lambda x: wav(excerpt(x)),
        "noise 20 dB": lambda x: wav(noise(x, 20, rng)),
        "noise 10 dB": lambda x: wav(noise(x, 10, rng)),
        "speed +5%": lambda x: wav(speed(x, 1.05)),
        "speed -5%": lambda x: wav(speed(x, 0.95)),
        "excerpt + mp3": lambda x: CODECS["mp3"](excerpt(x)),
        "noise 20 dB + speed +5%": lambda x: wav(speed(noise(x, 20, rng), 1.05)),
        "excerpt + speed -3% + aac": lambda x: CODECS["aac"](speed(excerpt(x, 10.0 * 1.0), 0.97)),
    }


# --------------------------------------------------------------------------- the service's path


class Bank:
    """Values banked as catalog entries on a local store; searched as a shard searcher does."""

    def __init__(self, root: str, values: dict[int, str]):
        self.store = ObjectStore(root)
        catalog = Catalog(self.store)
        catalog.create_bank("eval")
        entries = catalog.add_entries("eval", [Entry(bank="eval", content_type="audio", signals={A.AudioFingerprint.name: v},
                                                     metadata={"item": i}) for i, v in values.items()])
        self.item = {e.entry_id: e.metadata["item"] for e in entries}

    def searcher(self, signal: A.AudioFingerprint) -> LiveIndex:
        return LiveIndex(self.store, signal)

    def search(self, live: LiveIndex, values: list[str | None], k: int, radius: float) -> list[list[tuple[int, float]]]:
        """Per query value, up to k (banked item, distance) within `radius`; None: no query."""
        asked = [v for v in values if v is not None]
        found = iter(live.search_bags(asked, k, radius)[1] if asked else [])
        return [[(self.item[e], d) for e, _, d in next(found)] if v is not None else [] for v in values]


def speed_one(query: str | None) -> str | None:
    """A query value without its speed variants (only speed 1, variant 0)."""
    if query is None:
        return None
    lms = A.decode_value(query)
    return A.encode_value(lms[lms[:, 1] < A.VARIANT_STRIDE])


# --------------------------------------------------------------------------- run


def run(args) -> None:
    rng = np.random.default_rng(args.seed)
    tmp = tempfile.mkdtemp(prefix="eval_audio_")
    try:
        _run(args, rng, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(args, rng: np.random.Generator, tmp: str) -> None:
    t0 = time.perf_counter()
    items = (render_speech(args.speech, rng, tmp) if shutil.which("espeak-ng") else []) + sound_files(args.sounds)
    order = rng.permutation(len(items))
    banked = set(order[: len(items) // 2].tolist())
    durations = np.array([len(x) / WORK_RATE for _, x in items])
    n_speech = sum(name.startswith("espeak:") for name, _ in items)
    print(f"material: {len(items)} items ({n_speech} espeak-ng passages, {len(items) - n_speech} sound files), "
          f"{durations.min():.1f}-{durations.max():.1f} s (median {np.median(durations):.1f} s); banked {len(banked)}; "
          f"built in {time.perf_counter() - t0:.0f} s", flush=True)
    available = {name: _works(fn) for name, fn in CODECS.items()}
    print("encoders: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in available.items()), flush=True)

    signal = A.AudioFingerprint()
    loose = A.AudioFingerprint()
    loose.min_votes = 1  # to see the scores of candidates below the vote floor too
    t0 = time.perf_counter()
    bank = Bank(os.path.join(tmp, "bank"), {i: signal.compute(wav(items[i][1])).value for i in sorted(banked)})
    strict, wide = bank.searcher(signal), bank.searcher(loose)
    print(f"banked {len(banked)} items in {time.perf_counter() - t0:.1f} s", flush=True)

    results = []  # (edit, item, is_banked, {config: [(banked item, distance), ...] best first})
    edit_fns = {k: v for k, v in edits(rng).items() if all(available.get(c, True) for c in CODECS if c in k.split()[0])}
    t0 = time.perf_counter()
    compute_s, search_s = [], []
    for name, fn in edit_fns.items():
        queries = []
        for _, x in items:
            data = fn(x)
            tq = time.perf_counter()
            queries.append(signal.compute_query(data).value)
            compute_s.append(time.perf_counter() - tq)
        tq = time.perf_counter()
        found = {
            "speeds 5": bank.search(strict, queries, 1, signal.default_threshold),
            "speed 1 only": bank.search(strict, [speed_one(q) for q in queries], 1, signal.default_threshold),
            "any score": bank.search(wide, queries, 2, 1.0),
        }
        search_s.append((time.perf_counter() - tq) / len(queries))
        for i in range(len(items)):
            results.append((name, i, i in banked, {config: hits[i] for config, hits in found.items()}))
    print(f"{len(results)} queries in {time.perf_counter() - t0:.0f} s; per query: compute_query (5 speed variants) "
          f"median {1000 * np.median(compute_s):.0f} ms, three searches {1000 * np.mean(search_s):.0f} ms", flush=True)

    threshold = signal.default_threshold
    print_scores(results, "any score")
    print(f"\n### Precision / recall per edit (distance <= {threshold}, i.e. score >= {1 - threshold:.2f}, "
          f"and >= {signal.min_votes} votes; query speeds {A.QUERY_SPEEDS})\n")
    table(results, edit_fns, "speeds 5")
    print("\n### Ablation: no speed variants at query time (speed 1 only), same threshold\n")
    table(results, edit_fns, "speed 1 only", only=[e for e in edit_fns if "speed" in e or "excerpt" in e])
    if not args.no_ablation:
        ablation_coarse(items, banked, rng, tmp)
    latency(items, banked, signal, args, tmp)


def _works(fn) -> bool:
    try:
        return len(A.decode_audio(fn(np.sin(np.arange(WORK_RATE) * 0.1).astype(np.float32)), A.SAMPLE_RATE)) > 1000
    except Exception as exc:  # encoder missing in this FFmpeg build
        print(f"  encoder failed: {exc}", file=sys.stderr)
        return False


def decide(hits, banked_item) -> tuple[bool, bool]:
    """(true positive, false positive) of one query from its top match (already thresholded)."""
    if not hits:
        return False, False
    return hits[0][0] == banked_item, hits[0][0] != banked_item


def table(results, edit_fns, config, only=None):
    print("| edit | recall (banked found) | false matches / queries | precision |")
    print("|---|---|---|---|")
    totals = np.zeros(4)
    for name in only or edit_fns:
        tp = fp = pos = q = 0
        for edit, i, is_banked, found in results:
            if edit != name:
                continue
            t, f = decide(found[config], i if is_banked else None)
            tp += t
            fp += f
            pos += is_banked
            q += 1
        totals += (tp, fp, pos, q)
        prec = tp / (tp + fp) if tp + fp else float("nan")
        print(f"| {name} | {tp}/{pos} = {tp / max(pos, 1):.3f} | {fp}/{q} | {prec:.3f} |")
    tp, fp, pos, q = totals
    print(f"| **all** | {int(tp)}/{int(pos)} = {tp / max(pos, 1):.3f} | {int(fp)}/{int(q)} | {tp / max(tp + fp, 1):.3f} |")


def print_scores(results, config):
    genuine, impostor = [], []
    for edit, i, is_banked, found in results:
        for item, d in found[config]:
            (genuine if (is_banked and item == i) else impostor).append(1.0 - d)
    print("\n### Score distributions (top-2 candidates of every query with >= 1 offset-consistent vote; "
          f"match: score >= {1 - A.AudioFingerprint.default_threshold:.2f})\n")
    print("| pairs | n | score p5 / p50 / p95 / max |")
    print("|---|---|---|")
    for label, scores in (("same item (banked, any edit)", genuine), ("different items", impostor)):
        a = np.array(scores or [0.0])
        print(f"| {label} | {len(scores)} | {np.percentile(a, 5):.3f} / {np.median(a):.3f} / {np.percentile(a, 95):.3f} / {a.max():.3f} |")


def ablation_coarse(items, banked, rng, tmp):
    """Speed tolerance from coarser hashes (no query variants) instead of query variants."""
    print("\n### Ablation: coarse hash quantisation instead of query speed variants (recall; distractor false matches)\n")
    edits_ = {"original": wav, "speed +5%": lambda x: wav(speed(x, 1.05)), "speed -5%": lambda x: wav(speed(x, 0.95)),
              "speed +2%": lambda x: wav(speed(x, 1.02)), "mp3": CODECS["mp3"], "noise 10 dB": lambda x: wav(noise(x, 10, rng))}
    decoded = {name: [A.decode_audio(fn(x)) for _, x in items] for name, fn in edits_.items()}
    signal = A.AudioFingerprint()
    print("| hash quantisation (freq bins, dt frames) | " + " | ".join(edits_) + " | false matches |")
    print("|---|" + "---|" * (len(edits_) + 1))
    saved = A.FREQ_QUANT, A.TIME_QUANT
    try:
        for fq, tq in ((1, 1), (2, 1), (4, 2), (8, 4)):
            A.FREQ_QUANT, A.TIME_QUANT = fq, tq
            bank = Bank(os.path.join(tmp, f"coarse-{fq}-{tq}"), {i: A.encode_value(A.landmarks(decoded["original"][i])) for i in sorted(banked)})
            live = bank.searcher(signal)
            cells, fps, queries = [], 0, 0
            for name in edits_:
                found = bank.search(live, [A.encode_value(A.landmarks(x)) for x in decoded[name]], 1, signal.default_threshold)
                tp = sum(bool(hits) and hits[0][0] == i for i, hits in enumerate(found) if i in banked)
                fps += sum(bool(hits) for i, hits in enumerate(found) if i not in banked)
                queries += len(items) - len(banked)
                cells.append(f"{tp / len(banked):.2f}")
            print(f"| {fq}, {tq} | " + " | ".join(cells) + f" | {fps}/{queries} |", flush=True)
    finally:
        A.FREQ_QUANT, A.TIME_QUANT = saved


def replicated_shard(base: list[np.ndarray], size: int) -> tuple[Shard, dict[str, int]]:
    """A postings shard of `size` tracks: the banked landmarks, then replicas whose hashes are
    salted (the f1 and f2 - f1 fields shifted, a distinct pair per replica) so that their
    postings are not identical; track r is entry 't<r>'.  Also each entry's number of rows."""
    keys, times = [], []
    for r in range(size):
        lm = base[r % len(base)]
        h = lm[:, 0]
        if r >= len(base):  # a different "track" with the same statistics
            salt = r // len(base)
            f1 = ((h >> 13) + np.uint32(salt % 256)) % np.uint32(256)
            df = (((h >> 6) & np.uint32(127)) + np.uint32(salt // 256)) % np.uint32(128)
            h = (f1 << 13) | (df << 6) | (h & np.uint32(63))
        keys.append(h)
        times.append(lm[:, 1] / A.FRAMES_PER_SECOND)
    names = [f"t{r}" for r in range(size)]
    counts = [len(k) for k in keys]
    rows = sum(counts)
    shard = Shard.build(IndexParams(type="postings"), np.repeat(np.asarray(names, dtype=object), counts), np.concatenate(keys), None,
                        banks=np.full(rows, "eval", dtype=object), times=np.concatenate(times))
    return shard, dict(zip(names, counts))


def latency(items, banked, signal, args, tmp):
    """`search_bags` time of a 10 s query against banks of replicated real landmarks, loaded
    into a `LiveIndex` as a published version's shard."""
    print("\n### Lookup latency against bank size (`LiveIndex.search_bags`, one 10 s mp3 excerpt query with "
          "5 speed variants; build = assemble the shard and sort its keys)\n")
    print("| bank tracks | postings | build s | query p50 ms | query p95 ms | right track first |")
    print("|---|---|---|---|---|---|")
    order = sorted(banked)
    base = [A.decode_value(signal.compute(wav(items[i][1])).value) for i in order]
    queries = [(f"t{r}", signal.compute_query(CODECS["mp3"](excerpt(items[i][1]))).value) for r, i in enumerate(order[:20])]
    for size in args.bank_sizes:
        t0 = time.perf_counter()
        shard, entry_rows = replicated_shard(base, size)
        shard.search_pairs(np.zeros(1, np.uint32), 1, 0)  # sorts the keys, as the first search would
        build = time.perf_counter() - t0
        live = LiveIndex(ObjectStore(os.path.join(tmp, f"latency-{size}")), signal)  # an empty catalog
        live.state.shards.append(shard)  # as `LiveIndex.load` does with a published version's shards
        live.state.entry_rows.update(entry_rows)
        times, right = [], 0
        for track, q in queries * 3:
            t0 = time.perf_counter()
            _, [hits] = live.search_bags([q], 10, signal.default_threshold)
            times.append(time.perf_counter() - t0)
            right += bool(hits) and hits[0][0] == track
        print(f"| {size:,} | {len(shard):,} | {build:.1f} | {1000 * np.median(times):.1f} | {1000 * np.percentile(times, 95):.1f} "
              f"| {right}/{len(times)} |", flush=True)
        del live, shard


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--speech", type=int, default=40, help="espeak-ng passages")
    parser.add_argument("--sounds", type=int, default=30, help="sound files from installed packages")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--bank-sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--no-ablation", action="store_true", help="skip the coarse-hash ablation")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
