"""Evaluate the three text signals (text_exact, text_minhash, text_embedding) on real text.

Corpus: Debian documentation on this machine, which nobody on this project wrote — README,
README.Debian, NEWS, changelog and copyright files under /usr/share/doc (gzip or plain) and a
seeded sample of man pages from /usr/share/man/man1 rendered to plain text with `man -l` and
`col -bx`. Files are split into paragraphs of 40-200 words; licence and copyright boilerplate
(which repeats across packages and would make true duplicates) is dropped, and so is every
paragraph whose word-3-gram Jaccard with an already kept one is >= 0.2, so no two passages
are near-duplicates of each other. A bank of passages is kept; other passages are distractors.

Queries: each bank passage edited in one of several seeded ways (typos, word insertion and
deletion, sentence or clause reorder, case/punctuation/spacing, truncation, an appended
sentence, synonym paraphrase, combinations): the true answer is the passage it came from.
Each distractor is edited the same ways and has no true answer.

Reported per signal at its default threshold: precision and recall per edit and overall, and
µAP (every query's 10 nearest bank entries, pooled and ranked globally by score, AP divided by
the number of true pairs). For text_minhash also: its distances per edit and against
distractors, the estimated against the true Jaccard, a threshold sweep, shingling variants,
and compute throughput on this machine.

    nice -n 15 python benchmarks/eval_text.py                   # 2-7 min on 2 busy cores (the embedding)
    nice -n 15 python benchmarks/eval_text.py --no-embedding    # about 10 s
    nice -n 15 python benchmarks/eval_text.py --per-edit 150    # the run text_minhash.py quotes

The corpus is cached in the temp directory after the first run (which adds about 35 s).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from tables import fmt, micro_ap, print_table

from mediamatch.platform.signals.hashes import TextExact, normalize_text
from mediamatch.platform.signals.text_minhash import TextMinHash, _char_shingles, _mix64

DOC = Path("/usr/share/doc")
MAN1 = Path("/usr/share/man/man1")
# never used here: reserved for independent evaluation
EXCLUDED_PACKAGES = re.compile(r"fortune|wallpaper|background|backdrop", re.I)
BOILERPLATE = re.compile(
    r"licen[cs]|warrant|copyright|\(c\)|©|permission is hereby|free software|redistribut|merchantab|"
    r"public domain|all rights reserved|spdx|upstream-name|upstream-contact|format:|files:",
    re.I,
)
CHANGELOG_LINE = re.compile(r"^\S.*\)\s.*urgency=|^ -- .*<.*@.*>|^\s*\[ .* \]\s*$")
SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
CLAUSE_SPLIT = re.compile(r"(?<=[,;:])\s+")


# ---------------------------------------------------------------------------------- corpus


def _read(path: Path, limit: int = 300_000) -> str:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read(limit)
        else:
            with open(path, "rb") as f:
                data = f.read(limit)
        return data.decode("utf-8", errors="replace")
    except OSError:
        return ""


def _render_man(path: Path) -> str:
    env = dict(os.environ, MANWIDTH="2000", MAN_KEEP_FORMATTING="0", LC_ALL="C.UTF-8")
    try:
        out = subprocess.run(
            f"man -l {json.dumps(str(path))} 2>/dev/null | col -bx", shell=True, env=env, capture_output=True, timeout=20
        ).stdout
    except subprocess.TimeoutExpired:
        return ""
    lines = out.decode("utf-8", errors="replace").splitlines()
    return "\n".join(lines[1:-1])  # the first and last lines are the page header and footer


def _paragraphs(text: str) -> list[str]:
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = [ln for ln in block.splitlines() if not CHANGELOG_LINE.search(ln)]
        paragraph = " ".join(" ".join(lines).split())
        paragraph = re.sub(r"^\s*[*-]\s+", "", paragraph)
        out.append(paragraph)
    return out


def _good(paragraph: str) -> bool:
    words = paragraph.split()
    if not 40 <= len(words) <= 200 or BOILERPLATE.search(paragraph):
        return False
    alphabetic = sum(1 for w in words if re.fullmatch(r"[A-Za-z][a-z'’-]*[.,;:!?)]?", w))
    return alphabetic >= 0.7 * len(words)  # prose, not tables, code or file lists


def _shingles3(text: str) -> set[str]:
    words = normalize_text(text).split()
    return {" ".join(words[i : i + 3]) for i in range(max(1, len(words) - 2))}


def collect_passages(seed: int, man_pages: int, per_source: int = 4) -> list[tuple[str, str]]:
    """(source, passage) pairs, deduplicated to pairwise word-3-gram Jaccard < 0.2; cached."""
    key = hashlib.sha256(f"v4 {seed} {man_pages} {per_source}".encode()).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / f"mediamatch-eval-text-{key}.json"
    if cache.exists():
        return [tuple(p) for p in json.loads(cache.read_text())]
    rng = random.Random(seed)
    sources: list[tuple[str, str]] = []
    names = re.compile(r"^(README.*|NEWS.*|changelog.*|copyright)$", re.I)
    for package in sorted(DOC.iterdir()):
        if EXCLUDED_PACKAGES.search(package.name) or not package.is_dir():
            continue
        for path in sorted(package.iterdir()):
            if path.is_file() and names.match(path.name) and not path.name.endswith(".html.gz"):
                sources.append((f"doc/{package.name}/{path.name}", _read(path)))
    man = sorted(p for p in MAN1.glob("*.gz") if not EXCLUDED_PACKAGES.search(p.name))
    gcloud = [p for p in man if p.name.startswith("gcloud")]  # 16k near-identical pages here: a few only
    others = [p for p in man if not p.name.startswith("gcloud")]
    picked = rng.sample(others, min(man_pages * 3 // 4, len(others)))
    picked += rng.sample(gcloud, min(man_pages - len(picked), len(gcloud)))
    for path in picked:
        sources.append((f"man1/{path.name}", _render_man(path)))

    candidates = []
    for source, text in sources:
        kept = [p for p in _paragraphs(text) if _good(p)]
        rng.shuffle(kept)
        candidates.extend((source, p) for p in kept[:per_source])
    rng.shuffle(candidates)

    passages: list[tuple[str, str]] = []
    owners: dict[str, list[int]] = defaultdict(list)
    sizes: list[int] = []
    for source, passage in candidates:
        shingles = _shingles3(passage)
        shared: dict[int, int] = defaultdict(int)
        for s in shingles:
            for j in owners.get(s, ()):
                shared[j] += 1
        if any(n / (len(shingles) + sizes[j] - n) >= 0.2 for j, n in shared.items()):
            continue
        for s in shingles:
            owners[s].append(len(passages))
        sizes.append(len(shingles))
        passages.append((source, passage))
    # interleave the kinds (changelogs, other documentation, man pages) so that every prefix,
    # the bank and the distractors included, mixes them rather than being mostly changelogs
    kinds: dict[str, list] = defaultdict(list)
    for source, passage in passages:
        kind = "man" if source.startswith("man1/") else "changelog" if "changelog" in source.lower() else "doc"
        kinds[kind].append((source, passage))
    mixed = []
    for i in range(max(map(len, kinds.values()))):
        mixed.extend(group[i] for _, group in sorted(kinds.items()) if i < len(group))
    passages = mixed
    cache.write_text(json.dumps(passages))
    return passages


# ----------------------------------------------------------------------------------- edits

SYNONYMS = {
    "use": "utilize", "uses": "utilizes", "used": "utilized", "using": "utilizing",
    "file": "document", "files": "documents", "show": "display", "shows": "displays",
    "program": "application", "programs": "applications", "option": "setting", "options": "settings",
    "default": "standard", "create": "make", "created": "made", "remove": "delete", "removed": "deleted",
    "directory": "folder", "directories": "folders", "run": "execute", "running": "executing",
    "print": "output", "prints": "outputs", "specify": "set", "specified": "given", "allow": "permit",
    "allows": "permits", "enable": "turn on", "disable": "turn off", "error": "failure", "errors": "failures",
    "user": "person", "users": "people", "system": "machine", "following": "subsequent", "also": "additionally",
    "must": "has to", "can": "is able to", "may": "might", "only": "just", "when": "whenever", "if": "in case",
    "new": "fresh", "change": "modify", "changes": "modifications", "changed": "modified", "fix": "repair",
    "fixed": "repaired", "support": "handling", "package": "bundle", "packages": "bundles", "command": "instruction",
    "commands": "instructions", "set": "configure", "large": "big", "small": "little", "start": "begin",
    "starts": "begins", "stop": "halt", "get": "obtain", "need": "require", "needed": "required",
    "contains": "holds", "contain": "hold", "several": "multiple", "many": "numerous", "because": "since",
    "however": "but", "instead": "rather", "version": "release", "read": "load", "write": "save",
}
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _typos(text: str, rng: random.Random, rate: float) -> str:
    chars = list(text)
    for _ in range(max(1, round(rate * len(text)))):
        letters = [i for i, c in enumerate(chars) if c.isalpha()]
        if not letters:
            break
        i = rng.choice(letters)
        op = rng.randrange(4)
        if op == 0:
            chars[i] = rng.choice(LETTERS)
        elif op == 1:
            del chars[i]
        elif op == 2:
            chars.insert(i, rng.choice(LETTERS))
        elif i + 1 < len(chars):
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
    return "".join(chars)


def _case_punct_space(text: str, rng: random.Random) -> str:
    out = []
    for word in text.split():
        r = rng.random()
        word = word.upper() if r < 0.1 else word.lower() if r < 0.4 else word.capitalize() if r < 0.5 else word
        r = rng.random()
        if r < 0.1:
            word = word.rstrip(".,;:") + rng.choice([",", ".", " -", "!", ";"])
        elif r < 0.2:
            word = word.strip(".,;:()\"'")
        out.append(word)
    return "".join(w + rng.choice([" ", " ", " ", "  ", "\n", "\t"]) for w in out).strip()


def _insert_words(text: str, rng: random.Random, vocabulary: list[str], share: float = 0.1) -> str:
    words = text.split()
    for _ in range(max(3, round(share * len(words)))):
        words.insert(rng.randrange(len(words) + 1), rng.choice(vocabulary))
    return " ".join(words)


def _delete_words(text: str, rng: random.Random, share: float = 0.1) -> str:
    words = text.split()
    for _ in range(max(3, round(share * len(words)))):
        if len(words) > 5:
            del words[rng.randrange(len(words))]
    return " ".join(words)


def _reorder(text: str, rng: random.Random) -> str:
    parts = SENTENCE_SPLIT.split(text)
    if len(parts) < 2:
        parts = CLAUSE_SPLIT.split(text)
    if len(parts) < 2:  # one long clause: swap its halves
        words = text.split()
        cut = rng.randrange(len(words) // 3, 2 * len(words) // 3)
        return " ".join(words[cut:] + words[:cut])
    order = list(range(len(parts)))
    while order == sorted(order):
        rng.shuffle(order)
    return " ".join(parts[i] for i in order)


def _truncate(text: str, rng: random.Random) -> str:
    words = text.split()
    return " ".join(words[: round(rng.uniform(0.6, 0.8) * len(words))])


def _append(text: str, rng: random.Random, sentences: list[str]) -> str:
    return text + " " + rng.choice(sentences)


def _synonyms(text: str, rng: random.Random, share: float = 1.0) -> str:
    def swap(m: re.Match) -> str:
        word = m.group(0)
        new = SYNONYMS.get(word.lower())
        if new is None or rng.random() > share:
            return word
        return new.capitalize() if word[0].isupper() else new

    return re.sub(r"[A-Za-z]+", swap, text)


def _paraphrase(text: str, rng: random.Random) -> str:
    text = _synonyms(text, rng)
    text = re.sub(r"\b(the|a|an|that)\s+", lambda m: "" if rng.random() < 0.5 else m.group(0), text, flags=re.I)
    return _reorder(text, rng)


def make_edits(vocabulary: list[str], sentences: list[str]):
    return {
        "case_punct_space": lambda t, r: _case_punct_space(t, r),
        "typos_1pct": lambda t, r: _typos(t, r, 0.01),
        "typos_3pct": lambda t, r: _typos(t, r, 0.03),
        "typos_5pct": lambda t, r: _typos(t, r, 0.05),
        "insert_words_10pct": lambda t, r: _insert_words(t, r, vocabulary),
        "delete_words_10pct": lambda t, r: _delete_words(t, r),
        "reorder": lambda t, r: _reorder(t, r),
        "truncate_60_80pct": lambda t, r: _truncate(t, r),
        "append_sentence": lambda t, r: _append(t, r, sentences),
        "synonyms": lambda t, r: _synonyms(t, r),
        "paraphrase": lambda t, r: _paraphrase(t, r),
        "combo_light": lambda t, r: _case_punct_space(_delete_words(_insert_words(_typos(t, r, 0.02), r, vocabulary, 0.05), r, 0.05), r),
        "combo_heavy": lambda t, r: _typos(_synonyms(_append(_truncate(t, r), r, sentences), r, 0.5), r, 0.02),
    }


# --------------------------------------------------------------------------------- metrics





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


def evaluate(distances: np.ndarray, truth: np.ndarray, groups: list[str], threshold: float, to_score, k: int, seed: int):
    """Per group and overall: queries, true pairs, predicted pairs, precision, recall, µAP."""
    rows = {}
    n = distances.shape[1]
    predicted = distances <= threshold
    is_true = np.zeros_like(predicted)
    has = truth >= 0
    is_true[np.nonzero(has)[0], truth[has]] = True
    k = min(k, n)
    top = np.argpartition(distances, k - 1, axis=1)[:, :k]
    top_d = np.take_along_axis(distances, top, axis=1)
    top_true = np.take_along_axis(is_true, top, axis=1)
    finite = np.isfinite(top_d)
    top_s = np.where(finite, to_score(np.where(finite, top_d, 0)), -np.inf)
    for name in sorted(set(groups)) + ["overall"]:
        sel = np.ones(len(groups), bool) if name == "overall" else np.array([g == name for g in groups])
        pred, tp = predicted[sel].sum(), (predicted & is_true)[sel].sum()
        n_true = int(has[sel].sum())
        s, t = top_s[sel][finite[sel]], top_true[sel][finite[sel]]
        rows[name] = {
            "queries": int(sel.sum()),
            "true": n_true,
            "predicted": int(pred),
            "fp": int(pred - tp),
            "precision": tp / pred if pred else float("nan"),
            "recall": tp / n_true if n_true else float("nan"),
            "uap": micro_ap(s, t, n_true, np.random.default_rng(seed)),
        }
    return rows








# ------------------------------------------------------------------------------- variants


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


# ----------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=20240501)
    parser.add_argument("--bank", type=int, default=500)
    parser.add_argument("--distractors", type=int, default=500)
    parser.add_argument("--per-edit", type=int, default=100, help="edited bank passages per edit type")
    parser.add_argument("--man-pages", type=int, default=400)
    parser.add_argument("--no-embedding", action="store_true", help="skip text_embedding (the slow one)")
    parser.add_argument("--no-variants", action="store_true", help="skip the text_minhash shingling variants")
    args = parser.parse_args()

    t0 = time.perf_counter()
    passages = collect_passages(args.seed, args.man_pages)
    need = args.bank + args.distractors + 50
    if len(passages) < need:
        sys.exit(f"only {len(passages)} passages found, need {need}")
    rng = random.Random(args.seed)
    bank = [p for _, p in passages[: args.bank]]
    distractors = [p for _, p in passages[args.bank : args.bank + args.distractors]]
    rest = [p for _, p in passages[args.bank + args.distractors :]]
    vocabulary = sorted({w.strip(".,;:()") for p in rest for w in p.split() if w.isalpha() and len(w) > 2})
    sentences = [s for p in rest for s in SENTENCE_SPLIT.split(p) if 8 <= len(s.split()) <= 30]
    edits = make_edits(vocabulary, sentences)

    queries, truth, groups = [], [], []
    for name, edit in edits.items():
        for i in rng.sample(range(len(bank)), min(args.per_edit, len(bank))):
            queries.append(edit(bank[i], rng))
            truth.append(i)
            groups.append(name)
    names = list(edits)
    for j, passage in enumerate(distractors):
        name = names[j % len(names)]
        queries.append(edits[name](passage, rng))
        truth.append(-1)
        groups.append(name)
    truth = np.array(truth)
    words = [len(p.split()) for p in bank + distractors]
    print(f"## Text signals on Debian documentation (seed {args.seed})\n")
    print(
        f"{len(passages)} passages of 40-200 words after filtering and near-duplicate removal "
        f"(from /usr/share/doc and {args.man_pages} sampled man1 pages); bank {len(bank)}, "
        f"distractors {len(distractors)} (edited like the positives, no true match), "
        f"{int((truth >= 0).sum())} positive queries ({args.per_edit} per edit); "
        f"passage words median {int(np.median(words))}, mean {np.mean(words):.0f}. "
        f"Corpus ready in {time.perf_counter() - t0:.1f} s."
    )

    minhash, exact = TextMinHash(), TextExact()
    results = {}

    # text_exact
    eb = [s.value for s in exact.compute_batch(bank)]
    eq = [s.value for s in exact.compute_batch(queries)]
    index = defaultdict(list)
    for j, v in enumerate(eb):
        index[v].append(j)
    d_exact = np.full((len(queries), len(bank)), np.inf, dtype=np.float32)
    for i, v in enumerate(eq):
        d_exact[i, index.get(v, [])] = 0
    results["text_exact"] = evaluate(d_exact, truth, groups, 0, lambda d: 1.0 - d, 10, args.seed)

    # text_minhash (and its throughput)
    t = time.perf_counter()
    mb = [s.value for s in minhash.compute_batch(bank)]
    mq = [s.value for s in minhash.compute_batch(queries)]
    elapsed = time.perf_counter() - t
    n_texts, n_chars = len(bank) + len(queries), sum(map(len, bank + queries))
    t = time.perf_counter()
    for text in bank[:200]:
        minhash.compute(text)
    single = 200 / (time.perf_counter() - t)
    d_min = hamming_matrix(mq, mb, minhash.dim)
    jaccard = np.vectorize(minhash.jaccard, otypes=[float])
    results["text_minhash"] = evaluate(d_min, truth, groups, minhash.default_threshold, jaccard, 10, args.seed)

    # text_embedding
    if not args.no_embedding:
        from mediamatch.platform.signals.text_embedding import TextEmbedding

        emb = TextEmbedding()
        t = time.perf_counter()
        vb = np.array([s.value for s in emb.compute_batch(bank)], dtype=np.float32)
        vq = np.array([s.value for s in emb.compute_batch(queries)], dtype=np.float32)
        emb_rate = n_texts / (time.perf_counter() - t)
        d_emb = 1.0 - vq @ vb.T
        results["text_embedding"] = evaluate(d_emb, truth, groups, emb.default_threshold, lambda d: np.clip(1 - d, 0, 1), 10, args.seed)

    thresholds = {"text_exact": "equal", "text_minhash": f"d ≤ {minhash.default_threshold} bits", "text_embedding": "cos dist ≤ 0.15"}
    header = ["edit"] + [f"{s} P / R / µAP" for s in results]
    rows = []
    for g in names + ["overall"]:
        rows.append([g] + [f"{fmt(r[g]['precision'])} / {fmt(r[g]['recall'])} / {fmt(r[g]['uap'])}" for r in results.values()])
    print_table(
        "Precision / recall / µAP per edit at each signal's default threshold ("
        + ", ".join(f"{s}: {thresholds[s]}" for s in results)
        + "); precision n/a = no predictions",
        header,
        rows,
    )
    print_table(
        "Predicted pairs and false positives (overall)",
        ["signal", "queries", "true pairs", "predicted", "false positives", "precision", "recall", "µAP"],
        [[s, r["overall"]["queries"], r["overall"]["true"], r["overall"]["predicted"], r["overall"]["fp"],
          r["overall"]["precision"], r["overall"]["recall"], r["overall"]["uap"]] for s, r in results.items()],
    )

    # text_minhash distances: per edit (true pairs) and against everything untrue
    is_pos = truth >= 0
    pos_d = np.where(is_pos, d_min[np.arange(len(queries)), np.maximum(truth, 0)], np.nan)
    true_j, est_j = [], []
    for i in np.nonzero(is_pos)[0][:: max(1, is_pos.sum() // 600)]:
        a = set(_char_shingles(normalize_text(queries[i]), minhash.shingle_size).tolist())
        b = set(_char_shingles(normalize_text(bank[truth[i]]), minhash.shingle_size).tolist())
        true_j.append(len(a & b) / len(a | b))
        est_j.append(minhash.jaccard(pos_d[i]))
    wrong = d_min.copy()
    wrong[np.nonzero(is_pos)[0], truth[is_pos]] = np.inf
    nearest_wrong = wrong.min(axis=1)
    rows = []
    for g in names:
        sel = np.array([x == g for x in groups]) & is_pos
        q = np.percentile(pos_d[sel], [10, 50, 90])
        rows.append([g, *[f"{x:.0f}" for x in q], f"{minhash.jaccard(q[1]):.2f}", float((pos_d[sel] <= minhash.default_threshold).mean())])
    print_table(
        f"text_minhash: Hamming distance (of {minhash.dim}) to the true source, per edit",
        ["edit", "p10", "median", "p90", "median est. Jaccard", f"recall at {minhash.default_threshold}"],
        rows,
    )
    err = np.array(est_j) - np.array(true_j)
    print(
        f"\nEstimated vs true character-5-gram Jaccard over {len(err)} true pairs: mean error {err.mean():+.3f}, "
        f"mean |error| {np.abs(err).mean():.3f}, 95th percentile |error| {np.percentile(np.abs(err), 95):.3f} "
        f"(theory at J = 0.5: σ ≈ {2 * np.sqrt(0.25 * 0.75 / minhash.dim):.3f})."
    )
    nw = nearest_wrong[np.isfinite(nearest_wrong)]
    print(
        f"Nearest wrong bank entry, over all {len(nw)} queries: min {nw.min():.0f}, p0.1 {np.percentile(nw, 0.1):.0f}, "
        f"p1 {np.percentile(nw, 1):.0f}, median {np.median(nw):.0f} bits "
        f"(est. Jaccard max {minhash.jaccard(nw.min()):.2f}); all wrong pairs: median {np.median(wrong[np.isfinite(wrong)]):.0f}."
    )

    rows = []
    for thr in (31, 40, 48, 56, 63, 72, 80, 88, 96, 104):
        pred = d_min <= thr
        tp = int(pred[np.nonzero(is_pos)[0], truth[is_pos]].sum())
        n_pred = int(pred.sum())
        rows.append([thr, f"{minhash.jaccard(thr):.2f}", n_pred - tp, tp / n_pred if n_pred else float("nan"), tp / is_pos.sum()])
    print_table("text_minhash threshold sweep (all queries)", ["threshold (bits)", "min est. Jaccard", "false positives", "precision", "recall"], rows)

    if not args.no_variants:
        rows = []
        chosen = ("char 5-gram, 256 bits (chosen)", minhash)
        for label, sig in [
            chosen,
            variant("char 4-gram, 256 bits", shingle_size=4),
            variant("char 7-gram, 256 bits", shingle_size=7),
            variant("char 5-gram, 512 bits", dim=512, default_threshold=127),
            variant("word 3-gram, 256 bits", base=WordShingleMinHash),
            variant("word 2-gram, 256 bits", base=WordShingleMinHash, word_k=2),
        ]:
            thr = sig.dim // 4 - 1  # estimated Jaccard >= ~0.5 for every variant
            vb = [s.value for s in sig.compute_batch(bank)] if sig is not minhash else mb
            vq = [s.value for s in sig.compute_batch(queries)] if sig is not minhash else mq
            d = hamming_matrix(vq, vb, sig.dim)
            r = evaluate(d, truth, groups, thr, np.vectorize(sig.jaccard, otypes=[float]), 10, args.seed)
            w = d.copy()
            w[np.nonzero(is_pos)[0], truth[is_pos]] = np.inf
            rows.append([label, thr, r["overall"]["precision"], r["overall"]["recall"], r["overall"]["uap"],
                         r["typos_3pct"]["recall"], r["typos_5pct"]["recall"], r["synonyms"]["recall"],
                         f"{sig.jaccard(np.median(w[np.isfinite(w)])):.3f}", f"{sig.jaccard(w.min()):.2f}"])
        print_table(
            "text_minhash shingling variants (threshold = dim/4 - 1 bits, i.e. est. Jaccard ≥ 0.5)",
            ["variant", "threshold", "precision", "recall", "µAP", "R typos 3%", "R typos 5%", "R synonyms",
             "median est. J of wrong pairs", "max est. J of wrong pairs"],
            rows,
        )

    rows = [["text_minhash compute_batch", f"{n_texts / elapsed:.0f}", f"{n_chars / elapsed / 1e6:.2f}"],
            ["text_minhash compute (one at a time)", f"{single:.0f}", ""]]
    if not args.no_embedding:
        rows.append(["text_embedding compute_batch (CPU)", f"{emb_rate:.0f}", ""])
    print_table(
        f"Compute throughput on this machine ({os.cpu_count()} cores shared with other work, nice 15; "
        f"mean {n_chars / n_texts:.0f} characters per text)",
        ["what", "texts/s", "M chars/s"],
        rows,
    )
    print(f"\nTotal {time.perf_counter() - t0:.0f} s.")


if __name__ == "__main__":
    main()
