"""Studies behind the audio_fingerprint design, on the eval harness's audio material.

Match quality per edit is the harness's job (`mediamatch eval --audio DIR --speech N`, see
docs/eval.md); this script measures what chose the design: the score distributions of the same
and of different recordings (the threshold), the query-side speed variants against none and
against coarser hashes (the speed handling), and lookup latency against bank size.

Material: platform/evaluation/audio.py's: espeak-ng speech of Debian documentation and the
longest distinct sound files under --audio, half banked (a seeded draw), every item under
every edit. Banked values are catalog entries searched by `LiveIndex.search_bags` (the
harness's `LocalMatcher`); the latency banks are postings `Shard`s, as a published index
version holds them, loaded into a `LiveIndex`.

    nice -n 15 .venv/bin/python benchmarks/eval_audio.py            # default: a few minutes
    nice -n 15 .venv/bin/python benchmarks/eval_audio.py --speech 20 --sounds 20 --no-ablation
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from tables import print_table

from mediamatch.platform.evaluation import LocalMatcher, audio
from mediamatch.platform.evaluation.core import query_rng
from mediamatch.platform.index import IndexParams, Shard
from mediamatch.platform.live import LiveIndex
from mediamatch.platform.signals import audio as A
from mediamatch.platform.storage import ObjectStore


def banked_matcher(signal: A.AudioFingerprint, values: dict[int, str]) -> tuple[LocalMatcher, dict[str, int]]:
    """`values` (item -> value) banked as catalog entries; the matcher and entry id -> item."""
    matcher = LocalMatcher([signal], content_type="audio")
    ids = matcher.bank_values([{signal.name: v} for v in values.values()])
    return matcher, dict(zip(ids, values))


def top(matcher: LocalMatcher, item_of: dict[str, int], values: list, k: int, radius: float) -> list[list[tuple[int, float]]]:
    """Per query value, up to k (banked item, distance) within `radius`."""
    return [[(item_of[e], d) for e, d in hits] for hits in matcher.search(A.AudioFingerprint.name, values, k, radius)]


def speed_one(query: str | None) -> str | None:
    """A query value without its speed variants (only speed 1, variant 0)."""
    if query is None:
        return None
    lms = A.decode_value(query)
    return A.encode_value(lms[lms[:, 1] < A.VARIANT_STRIDE])


def first_is(hits: list[tuple[int, float]], item: int | None) -> tuple[bool, bool]:
    """(true positive, false positive) of one query from its top match (already thresholded)."""
    return (bool(hits) and hits[0][0] == item), (bool(hits) and hits[0][0] != item)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--audio", action="append", help="a folder of sound files (repeatable; default /usr/share/tuxpaint/stamps)")
    parser.add_argument("--sounds", type=int, default=30, help="sound files taken from --audio")
    parser.add_argument("--speech", type=int, default=40, help="espeak-ng passages")
    parser.add_argument("--speech-from", action="append", help="documents to speak (repeatable; default /usr/share/doc)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--bank-sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--no-ablation", action="store_true", help="skip the coarse-hash ablation")
    args = parser.parse_args()

    t0 = time.perf_counter()
    items = audio.render_speech(audio.speech_texts(args.speech_from or ["/usr/share/doc"], args.speech, args.seed), args.seed) if args.speech else []
    items += audio.sound_files(args.audio or ["/usr/share/tuxpaint/stamps"], args.sounds)
    banked = audio.banked_split(len(items), args.seed)
    codecs = audio.working_codecs()
    edits = [e for e, (codec, _) in audio.EDITS.items() if codec is None or codecs[codec]]
    print(f"material: {len(items)} items, {len(banked)} banked; encoders: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in codecs.items())
          + f"; built in {time.perf_counter() - t0:.0f} s", flush=True)

    signal, loose = A.AudioFingerprint(), A.AudioFingerprint()
    loose.min_votes = 1  # to see the scores of candidates below the vote floor too
    values = {i: signal.compute(audio.wav(items[i][1])).value for i in banked}
    strict, item_of = banked_matcher(signal, values)
    wide, wide_item_of = banked_matcher(loose, values)

    results = []  # (edit, item, {config: [(banked item, distance), ...] best first})
    compute_s = []
    for name in edits:
        queries = []
        for i, (_, x) in enumerate(items):
            data = audio.EDITS[name][1](x, query_rng(args.seed, name, i))
            tq = time.perf_counter()
            queries.append(signal.compute_query(data).value)
            compute_s.append(time.perf_counter() - tq)
        found = {"speeds": top(strict, item_of, queries, 1, signal.default_threshold),
                 "speed 1 only": top(strict, item_of, [speed_one(q) for q in queries], 1, signal.default_threshold),
                 "any score": top(wide, wide_item_of, queries, 2, 1.0)}
        results += [(name, i, {config: hits[i] for config, hits in found.items()}) for i in range(len(items))]
    print(f"{len(results)} queries; compute_query ({len(A.QUERY_SPEEDS)} speed variants) median {1000 * np.median(compute_s):.0f} ms", flush=True)

    genuine = [1.0 - d for _, i, found in results for item, d in found["any score"] if item == i]
    impostor = [1.0 - d for _, i, found in results for item, d in found["any score"] if item != i]
    print_table(f"Score distributions (top-2 candidates of every query with >= 1 offset-consistent vote; match: score >= "
                f"{1 - signal.default_threshold:.2f} and >= {signal.min_votes} votes)", ["pairs", "n", "score p5 / p50 / p95 / max"],
                [[label, len(s), " / ".join(f"{v:.3f}" for v in (*np.percentile(s or [0.0], [5, 50, 95]), max(s or [0.0])))]
                 for label, s in (("same item (banked, any edit)", genuine), ("different items", impostor))])

    rows = []
    banked_set = set(banked)
    for name in [e for e in edits if "speed" in e or "excerpt" in e]:
        cells = []
        for config in ("speeds", "speed 1 only"):
            decided = [first_is(found[config], i if i in banked_set else None) for edit, i, found in results if edit == name]
            cells += [f"{sum(t for t, _ in decided)}/{len(banked)}", sum(f for _, f in decided)]
        rows.append([name, *cells])
    print_table(f"Ablation: query speed variants {A.QUERY_SPEEDS} against speed 1 only (top match within the threshold)",
                ["edit", "recall, variants", "false, variants", "recall, speed 1 only", "false, speed 1 only"], rows)
    if not args.no_ablation:
        ablation_coarse(items, banked, args.seed)
    latency(items, banked, signal, args.bank_sizes)


def ablation_coarse(items, banked, seed):
    """Speed tolerance from coarser hashes (no query variants) instead of query variants."""
    edits = {"original": audio.EDITS["original (wav)"][1], "speed +5%": audio.EDITS["speed +5%"][1], "speed -5%": audio.EDITS["speed -5%"][1],
             "speed +2%": lambda x, rng: audio.wav(audio.speed(x, 1.02)), "mp3": audio.EDITS["mp3 64k"][1], "noise 10 dB": audio.EDITS["noise 10 dB"][1]}
    decoded = {name: [A.decode_audio(fn(x, query_rng(seed, name, i))) for i, (_, x) in enumerate(items)] for name, fn in edits.items()}
    signal, banked_set, rows = A.AudioFingerprint(), set(banked), []
    saved = A.FREQ_QUANT, A.TIME_QUANT
    try:
        for fq, tq in ((1, 1), (2, 1), (4, 2), (8, 4)):
            A.FREQ_QUANT, A.TIME_QUANT = fq, tq
            matcher, item_of = banked_matcher(signal, {i: A.encode_value(A.landmarks(decoded["original"][i])) for i in banked})
            cells, false = [], 0
            for name in edits:
                found = top(matcher, item_of, [A.encode_value(A.landmarks(x)) for x in decoded[name]], 1, signal.default_threshold)
                cells.append(f"{sum(bool(h) and h[0][0] == i for i, h in enumerate(found) if i in banked_set) / len(banked):.2f}")
                false += sum(bool(h) for i, h in enumerate(found) if i not in banked_set)
            rows.append([f"{fq}, {tq}", *cells, f"{false}/{len(edits) * (len(items) - len(banked))}"])
            matcher.close()
    finally:
        A.FREQ_QUANT, A.TIME_QUANT = saved
    print_table("Ablation: coarse hash quantisation instead of query speed variants (recall; distractor false matches)",
                ["hash quantisation (freq bins, dt frames)", *edits, "false matches"], rows)


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


def latency(items, banked, signal, bank_sizes):
    """`search_bags` time of a 10 s query against banks of replicated real landmarks, loaded
    into a `LiveIndex` as a published version's shard."""
    base = [A.decode_value(signal.compute(audio.wav(items[i][1])).value) for i in banked]
    queries = [(f"t{r}", signal.compute_query(audio.CODECS["mp3"](audio.excerpt(items[i][1]))).value) for r, i in enumerate(banked[:20])]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in bank_sizes:
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
            rows.append([f"{size:,}", f"{len(shard):,}", f"{build:.1f}", f"{1000 * np.median(times):.1f}", f"{1000 * np.percentile(times, 95):.1f}",
                         f"{right}/{len(times)}"])
            del live, shard
    print_table("Lookup latency against bank size (`LiveIndex.search_bags`, one 10 s mp3 excerpt query with its speed variants; "
                "build = assemble the shard and sort its keys)", ["bank tracks", "postings", "build s", "query p50 ms", "query p95 ms",
                                                                  "right track first"], rows)


if __name__ == "__main__":
    main()
