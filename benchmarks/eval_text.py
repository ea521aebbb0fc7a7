"""Studies behind the text_minhash design, on the eval harness's text material.

Match quality of every text signal per edit is the harness's job (`mediamatch eval --text
/usr/share/doc --text /usr/share/man/man1`, see docs/eval.md); this script measures what chose
text_minhash's shingling and threshold: its Hamming distances to the true source per edit, the
estimated against the true Jaccard, the nearest wrong pairs, a threshold sweep, shingling
variants (character 4/5/7-grams, 512 bits, word 2/3-grams), and compute throughput.

Material: platform/evaluation/text.py's corpus (passages of Debian documentation and man pages,
near-duplicates removed) and seeded edits; every query against every banked passage, brute
force (the binary index is exact at the threshold).

    nice -n 15 .venv/bin/python benchmarks/eval_text.py                   # about a minute
    nice -n 15 .venv/bin/python benchmarks/eval_text.py --per-edit 150    # the run text_minhash.py quotes

The corpus is cached in the temp directory after the first run (which adds about 35 s).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time

import numpy as np

from tables import print_table

from mediamatch.platform.evaluation import Ranking, text
from mediamatch.platform.signals.hashes import normalize_text
from mediamatch.platform.signals.text_minhash import TextMinHash, _char_shingles, _mix64

DOCS = ["/usr/share/doc", "/usr/share/man/man1"]


def hamming_matrix(queries: list[str | None], bank: list[str | None], dim: int) -> np.ndarray:
    def bits(values):
        rows = np.zeros((len(values), dim), dtype=np.float32)
        for i, v in enumerate(values):
            if v is not None:
                rows[i] = np.unpackbits(np.frombuffer(bytes.fromhex(v), dtype=np.uint8))
        return rows

    q, b = bits(queries), bits(bank)
    d = q @ (1 - b).T + (1 - q) @ b.T
    d[[v is None for v in queries]] = np.inf
    d[:, [v is None for v in bank]] = np.inf
    return d


def quality(d: np.ndarray, truth: np.ndarray, groups: list[str], threshold: float, jaccard, k: int = 10) -> dict[str, dict]:
    """Per edit and overall: precision and recall at `threshold`, and µAP of every query's k
    nearest bank entries pooled (as the harness ranks them)."""
    has = truth >= 0
    is_true = np.zeros(d.shape, dtype=bool)
    is_true[np.flatnonzero(has), truth[has]] = True
    top = np.argsort(d, axis=1, kind="stable")[:, :k]
    top_d, top_true = np.take_along_axis(d, top, axis=1), np.take_along_axis(is_true, top, axis=1)
    out = {}
    for name in [*dict.fromkeys(groups), "overall"]:
        sel = np.ones(len(groups), bool) if name == "overall" else np.array([g == name for g in groups])
        predicted = d[sel] <= threshold
        tp, n_true = int((predicted & is_true[sel]).sum()), int(has[sel].sum())
        finite = np.isfinite(top_d[sel])
        scores, correct = jaccard(top_d[sel][finite]), top_true[sel][finite]
        order = np.argsort(-scores, kind="stable")
        out[name] = {"precision": tp / predicted.sum() if predicted.sum() else float("nan"), "recall": tp / n_true if n_true else float("nan"),
                     "uap": Ranking(name, scores[order], correct[order], n_true).micro_ap()}
    return out


class WordShingleMinHash(TextMinHash):
    """Variant for comparison: word k-grams (words hashed with blake2b) instead of characters."""

    word_k = 3

    def shingles(self, normalized: str) -> np.ndarray:
        words = normalized.split()
        h = np.fromiter(
            (int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little") for w in words), np.uint64, len(words)
        )
        n = max(1, len(words) - self.word_k + 1)
        h = np.concatenate([h, np.zeros(max(0, self.word_k - len(words)), np.uint64)])
        out = np.zeros(n, np.uint64)
        with np.errstate(over="ignore"):
            for j in range(self.word_k):
                out = out * np.uint64(0x9E3779B97F4A7C15) + h[j : j + n]
            return _mix64(out)


def variant(label: str, base=TextMinHash, **attrs):
    cls = type(f"Variant_{label}", (base,), attrs)
    return label, cls()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--text", action="append", help=f"a folder of documents (repeatable; default {' and '.join(DOCS)})")
    parser.add_argument("--seed", type=int, default=20240501)
    parser.add_argument("--bank", type=int, default=500)
    parser.add_argument("--distractors", type=int, default=500)
    parser.add_argument("--per-edit", type=int, default=100, help="edited bank passages per edit type")
    parser.add_argument("--man-pages", type=int, default=400)
    parser.add_argument("--no-variants", action="store_true", help="skip the text_minhash shingling variants")
    args = parser.parse_args()

    t0 = time.perf_counter()
    corpus = text.corpus(args.text or DOCS, args.bank, args.distractors, args.seed, args.man_pages)
    queries = list(text.make_queries(corpus, args.seed, args.per_edit, text.SUITE))
    bank, contents = corpus.bank, [q.content for q in queries]
    truth = np.array([-1 if q.truth is None else q.truth for q in queries])
    groups = [q.edit for q in queries]
    print(f"## text_minhash on {corpus.passages} passages (seed {args.seed})\n\nbank {len(bank)}, distractors {len(corpus.distractors)}, "
          f"{int((truth >= 0).sum())} positive queries ({args.per_edit} per edit); corpus ready in {time.perf_counter() - t0:.1f} s.")

    minhash = TextMinHash()
    t = time.perf_counter()
    mb = [s.value for s in minhash.compute_batch(bank)]
    mq = [s.value for s in minhash.compute_batch(contents)]
    elapsed = time.perf_counter() - t
    n_texts, n_chars = len(bank) + len(contents), sum(map(len, bank + contents))
    t = time.perf_counter()
    for passage in bank[:200]:
        minhash.compute(passage)
    single = min(200, len(bank)) / (time.perf_counter() - t)
    d_min = hamming_matrix(mq, mb, minhash.dim)

    # distances to the true source per edit, and against everything untrue
    is_pos = truth >= 0
    pos_d = np.where(is_pos, d_min[np.arange(len(contents)), np.maximum(truth, 0)], np.nan)
    true_j, est_j = [], []
    for i in np.flatnonzero(is_pos)[:: max(1, is_pos.sum() // 600)]:
        a = set(_char_shingles(normalize_text(contents[i]), minhash.shingle_size).tolist())
        b = set(_char_shingles(normalize_text(bank[truth[i]]), minhash.shingle_size).tolist())
        true_j.append(len(a & b) / len(a | b))
        est_j.append(minhash.jaccard(pos_d[i]))
    wrong = d_min.copy()
    wrong[np.flatnonzero(is_pos), truth[is_pos]] = np.inf
    nearest_wrong = wrong.min(axis=1)
    rows = []
    for g in text.SUITE:
        sel = np.array([x == g for x in groups]) & is_pos
        q = np.percentile(pos_d[sel], [10, 50, 90])
        rows.append([g, *[f"{x:.0f}" for x in q], f"{minhash.jaccard(q[1]):.2f}", float((pos_d[sel] <= minhash.default_threshold).mean())])
    print_table(f"text_minhash: Hamming distance (of {minhash.dim}) to the true source, per edit",
                ["edit", "p10", "median", "p90", "median est. Jaccard", f"recall at {minhash.default_threshold}"], rows)
    err = np.array(est_j) - np.array(true_j)
    print(f"\nEstimated vs true character-5-gram Jaccard over {len(err)} true pairs: mean error {err.mean():+.3f}, "
          f"mean |error| {np.abs(err).mean():.3f}, 95th percentile |error| {np.percentile(np.abs(err), 95):.3f} "
          f"(theory at J = 0.5: σ ≈ {2 * np.sqrt(0.25 * 0.75 / minhash.dim):.3f}).")
    nw = nearest_wrong[np.isfinite(nearest_wrong)]
    print(f"Nearest wrong bank entry, over all {len(nw)} queries: min {nw.min():.0f}, p0.1 {np.percentile(nw, 0.1):.0f}, "
          f"p1 {np.percentile(nw, 1):.0f}, median {np.median(nw):.0f} bits (est. Jaccard max {minhash.jaccard(nw.min()):.2f}); "
          f"all wrong pairs: median {np.median(wrong[np.isfinite(wrong)]):.0f}.")

    rows = []
    for thr in (31, 40, 48, 56, 63, 72, 80, 88, 96, 104):
        pred = d_min <= thr
        tp = int(pred[np.flatnonzero(is_pos), truth[is_pos]].sum())
        n_pred = int(pred.sum())
        rows.append([thr, f"{minhash.jaccard(thr):.2f}", n_pred - tp, tp / n_pred if n_pred else float("nan"), tp / is_pos.sum()])
    print_table("text_minhash threshold sweep (all queries)", ["threshold (bits)", "min est. Jaccard", "false positives", "precision", "recall"], rows)

    if not args.no_variants:
        rows = []
        for label, sig in [("char 5-gram, 256 bits (chosen)", minhash), variant("char 4-gram, 256 bits", shingle_size=4),
                           variant("char 7-gram, 256 bits", shingle_size=7), variant("char 5-gram, 512 bits", dim=512, default_threshold=127),
                           variant("word 3-gram, 256 bits", base=WordShingleMinHash), variant("word 2-gram, 256 bits", base=WordShingleMinHash, word_k=2)]:
            thr = sig.dim // 4 - 1  # estimated Jaccard >= ~0.5 for every variant
            d = d_min if sig is minhash else hamming_matrix([s.value for s in sig.compute_batch(contents)], [s.value for s in sig.compute_batch(bank)], sig.dim)
            r = quality(d, truth, groups, thr, np.vectorize(sig.jaccard, otypes=[float]))
            w = d.copy()
            w[np.flatnonzero(is_pos), truth[is_pos]] = np.inf
            rows.append([label, thr, r["overall"]["precision"], r["overall"]["recall"], r["overall"]["uap"], r["typos_3pct"]["recall"],
                         r["typos_5pct"]["recall"], r["synonyms"]["recall"], f"{sig.jaccard(np.median(w[np.isfinite(w)])):.3f}", f"{sig.jaccard(w.min()):.2f}"])
        print_table("text_minhash shingling variants (threshold = dim/4 - 1 bits, i.e. est. Jaccard ≥ 0.5)",
                    ["variant", "threshold", "precision", "recall", "µAP", "R typos 3%", "R typos 5%", "R synonyms",
                     "median est. J of wrong pairs", "max est. J of wrong pairs"], rows)

    print_table(f"Compute throughput on this machine ({os.cpu_count()} cores; mean {n_chars / n_texts:.0f} characters per text)",
                ["what", "texts/s", "M chars/s"], [["text_minhash compute_batch", f"{n_texts / elapsed:.0f}", f"{n_chars / elapsed / 1e6:.2f}"],
                                                   ["text_minhash compute (one at a time)", f"{single:.0f}", ""]])
    print(f"\nTotal {time.perf_counter() - t0:.0f} s.")


if __name__ == "__main__":
    main()
