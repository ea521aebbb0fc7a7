"""Texts: passages of documents under folders or object-store prefixes, edited in seeded ways.

Documents are README, NEWS, changelog and copyright files, .txt and .md files (gzip or plain)
and man pages (`name.N[.gz]`, rendered to plain text with `man -l` and `col -bx`; a seeded
sample of at most `man_pages`, the largest family of near-identical pages, such as the
thousands of `gcloud_*` pages, kept to a quarter of it). Files are split into paragraphs of
40-200 words of prose; licence and copyright boilerplate (which repeats across packages and
would make true duplicates) is dropped, and so is every paragraph whose word-3-gram Jaccard
with an already kept one is >= 0.2, so no two passages are near-duplicates of each other. The
first passages are banked, the next are distractors, the rest give the edits their words and
sentences to insert.

Queries: `per_edit` banked passages under each edit (typos, word insertion and deletion,
sentence or clause reorder, case/punctuation/spacing, truncation, an appended sentence, synonym
paraphrase, combinations); every distractor under one edit (in turn).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import re
import subprocess
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator, Sequence

from ..errors import InvalidInput
from ..signals.hashes import normalize_text
from .core import Material, Query

SIGNALS = ("text_exact", "text_minhash", "text_embedding")
DOC_NAMES = re.compile(r"^(README.*|NEWS.*|changelog.*|copyright|.*\.txt|.*\.md)$", re.I)
MAN_PAGE = re.compile(r"\.[1-9][a-z]*(\.gz)?$")
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
READ_LIMIT = 300_000
SPARE = 5  # passages at least, neither banked nor distractors: the words and sentences that edits insert


# -- passages ----------------------------------------------------------------------------------
def _text(data: bytes) -> str:
    if data[:2] == b"\x1f\x8b":  # gzip (a local store's reads already decompress .gz files)
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError):
            return ""
    return data[:READ_LIMIT].decode("utf-8", errors="replace")


def render_man(source: str) -> str:
    """A man page's source as plain text (header and footer lines dropped)."""
    env = dict(os.environ, MANWIDTH="2000", MAN_KEEP_FORMATTING="0", LC_ALL="C.UTF-8")
    try:
        out = subprocess.run("man -l - 2>/dev/null | col -bx", shell=True, input=source.encode(), env=env, capture_output=True, timeout=20).stdout
    except subprocess.TimeoutExpired:
        return ""
    lines = out.decode("utf-8", errors="replace").splitlines()
    return "\n".join(lines[1:-1])


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


def shingles3(text: str) -> set[str]:
    words = normalize_text(text).split()
    return {" ".join(words[i : i + 3]) for i in range(max(1, len(words) - 2))}


def _man_sample(keys: list[str], count: int, rng: random.Random) -> list[str]:
    """`count` man pages, the largest family (name before the first '_') at most a quarter when it
    holds over half of them (thousands of near-identical pages would crowd out the rest)."""
    family = lambda k: PurePosixPath(k).name.split("_")[0]  # noqa: E731
    sizes = Counter(map(family, keys))
    big = {f for f, n in sizes.items() if n > len(keys) // 2}
    crowd = [k for k in keys if family(k) in big]
    others = [k for k in keys if family(k) not in big]
    picked = rng.sample(others, min(count * 3 // 4 if crowd else count, len(others)))
    return picked + rng.sample(crowd, min(count - len(picked), len(crowd)))


def passages(sources: Sequence[str], seed: int, man_pages: int = 400, per_source: int = 4) -> list[tuple[str, str]]:
    """(document, passage) pairs of the documents under `sources`, deduplicated to pairwise
    word-3-gram Jaccard < 0.2 and interleaved by kind (changelogs, other documents, man pages);
    cached in the temp directory when man pages were rendered (they take a while)."""
    from ..storage import ObjectStore

    key = hashlib.sha256(json.dumps(["v5", sorted(sources), seed, man_pages, per_source]).encode()).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / f"mediamatch-eval-text-{key}.json"
    if cache.exists():
        return [tuple(p) for p in json.loads(cache.read_text())]
    rng = random.Random(seed)
    documents: list[tuple[str, str]] = []
    rendered = False
    for source in sources:
        store = ObjectStore(source)
        keys = [k for k in store.list() if not EXCLUDED_PACKAGES.search(k)]
        docs = [k for k in keys if DOC_NAMES.match(PurePosixPath(k).name) and not k.endswith(".html.gz")]
        man = _man_sample(sorted(k for k in keys if MAN_PAGE.search(k) and k not in docs), man_pages, rng)
        documents += [(f"{source}/{k}", _text(store.get(k))) for k in docs]
        documents += [(f"{source}/{k}", render_man(_text(store.get(k)))) for k in man]
        rendered |= bool(man)

    candidates = []
    for document, text in documents:
        kept = [p for p in _paragraphs(text) if _good(p)]
        rng.shuffle(kept)
        candidates.extend((document, p) for p in kept[:per_source])
    rng.shuffle(candidates)

    kept_passages: list[tuple[str, str]] = []
    owners: dict[str, list[int]] = defaultdict(list)
    sizes: list[int] = []
    for document, passage in candidates:
        shingles = shingles3(passage)
        shared: dict[int, int] = defaultdict(int)
        for s in shingles:
            for j in owners.get(s, ()):
                shared[j] += 1
        if any(n / (len(shingles) + sizes[j] - n) >= 0.2 for j, n in shared.items()):
            continue
        for s in shingles:
            owners[s].append(len(kept_passages))
        sizes.append(len(shingles))
        kept_passages.append((document, passage))
    # interleave the kinds so that every prefix, the bank and the distractors included, mixes
    # them rather than being mostly changelogs
    kinds: dict[str, list] = defaultdict(list)
    for document, passage in kept_passages:
        kind = "man" if MAN_PAGE.search(document) else "changelog" if "changelog" in document.lower() else "doc"
        kinds[kind].append((document, passage))
    mixed = []
    for i in range(max(map(len, kinds.values()), default=0)):
        mixed.extend(group[i] for _, group in sorted(kinds.items()) if i < len(group))
    if rendered:
        cache.write_text(json.dumps(mixed))
    return mixed


# -- edits -------------------------------------------------------------------------------------
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


def typos(text: str, rng: random.Random, rate: float) -> str:
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


def case_punct_space(text: str, rng: random.Random) -> str:
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


def insert_words(text: str, rng: random.Random, vocabulary: list[str], share: float = 0.1) -> str:
    words = text.split()
    for _ in range(max(3, round(share * len(words)))):
        words.insert(rng.randrange(len(words) + 1), rng.choice(vocabulary))
    return " ".join(words)


def delete_words(text: str, rng: random.Random, share: float = 0.1) -> str:
    words = text.split()
    for _ in range(max(3, round(share * len(words)))):
        if len(words) > 5:
            del words[rng.randrange(len(words))]
    return " ".join(words)


def reorder(text: str, rng: random.Random) -> str:
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


def truncate(text: str, rng: random.Random) -> str:
    words = text.split()
    return " ".join(words[: round(rng.uniform(0.6, 0.8) * len(words))])


def append(text: str, rng: random.Random, sentences: list[str]) -> str:
    return text + " " + rng.choice(sentences)


def synonyms(text: str, rng: random.Random, share: float = 1.0) -> str:
    def swap(m: re.Match) -> str:
        word = m.group(0)
        new = SYNONYMS.get(word.lower())
        if new is None or rng.random() > share:
            return word
        return new.capitalize() if word[0].isupper() else new

    return re.sub(r"[A-Za-z]+", swap, text)


def paraphrase(text: str, rng: random.Random) -> str:
    text = synonyms(text, rng)
    text = re.sub(r"\b(the|a|an|that)\s+", lambda m: "" if rng.random() < 0.5 else m.group(0), text, flags=re.I)
    return reorder(text, rng)


TextEdit = Callable[[str, random.Random], str]


def make_edits(vocabulary: list[str], sentences: list[str]) -> dict[str, TextEdit]:
    return {
        "case_punct_space": lambda t, r: case_punct_space(t, r),
        "typos_1pct": lambda t, r: typos(t, r, 0.01),
        "typos_3pct": lambda t, r: typos(t, r, 0.03),
        "typos_5pct": lambda t, r: typos(t, r, 0.05),
        "insert_words_10pct": lambda t, r: insert_words(t, r, vocabulary),
        "delete_words_10pct": lambda t, r: delete_words(t, r),
        "reorder": lambda t, r: reorder(t, r),
        "truncate_60_80pct": lambda t, r: truncate(t, r),
        "append_sentence": lambda t, r: append(t, r, sentences),
        "synonyms": lambda t, r: synonyms(t, r),
        "paraphrase": lambda t, r: paraphrase(t, r),
        "combo_light": lambda t, r: case_punct_space(delete_words(insert_words(typos(t, r, 0.02), r, vocabulary, 0.05), r, 0.05), r),
        "combo_heavy": lambda t, r: typos(synonyms(append(truncate(t, r), r, sentences), r, 0.5), r, 0.02),
    }


SUITE = tuple(make_edits([], []))


@dataclass
class Corpus:
    bank: list[str]
    distractors: list[str]
    vocabulary: list[str]  # words and sentences of the other passages, for insertions
    sentences: list[str]
    passages: int  # found under the sources


def corpus(sources: Sequence[str], bank: int, distractors: int, seed: int = 0, man_pages: int = 400) -> Corpus:
    found = passages(sources, seed, man_pages)
    need = bank + distractors + SPARE
    if len(found) < need:
        raise InvalidInput(f"{len(found)} passages under {', '.join(sources)}, fewer than the {need} needed "
                           f"({bank} banked + {distractors} distractors + {SPARE} for the edits' vocabulary)")
    texts = [p for _, p in found]
    rest = texts[bank + distractors :]
    sentences = [s for p in rest for s in SENTENCE_SPLIT.split(p) if 8 <= len(s.split()) <= 30]
    return Corpus(texts[:bank], texts[bank : bank + distractors],
                  sorted({w.strip(".,;:()") for p in rest for w in p.split() if w.isalpha() and len(w) > 2}), sentences or rest, len(found))


def make_queries(texts: Corpus, seed: int, per_edit: int, edits: Sequence[str]) -> Iterator[Query]:
    """`per_edit` banked passages (a seeded draw per edit) under each edit, then every distractor
    under one edit, in turn."""
    suite = make_edits(texts.vocabulary, texts.sentences)
    for name in edits:
        for i in random.Random(f"{seed}/{name}").sample(range(len(texts.bank)), min(per_edit, len(texts.bank))):
            yield Query(suite[name](texts.bank[i], random.Random(f"{seed}/{name}/{i}")), name, i)
    for j, passage in enumerate(texts.distractors):
        name = edits[j % len(edits)]
        yield Query(suite[name](passage, random.Random(f"{seed}/{name}/d{j}")), name, None)


def material(texts: Corpus, seed: int = 0, per_edit: int = 100, edits: Iterable[str] = SUITE, notes: Sequence[str] = ()) -> Material:
    edits = list(edits)
    count = len(edits) * min(per_edit, len(texts.bank)) + len(texts.distractors)
    return Material("text", list(texts.bank), [f"passage {i}" for i in range(len(texts.bank))],
                    lambda: make_queries(texts, seed, per_edit, edits), count, len(texts.distractors), list(notes))


def load_material(sources: Sequence[str], bank: int = 500, distractors: int = 500, per_edit: int = 100, man_pages: int = 400,
                  seed: int = 0, edits: Iterable[str] = SUITE) -> Material:
    texts = corpus(sources, bank, distractors, seed, man_pages)
    words = sorted(len(p.split()) for p in texts.bank + texts.distractors)
    note = (f"Documents under {', '.join(sources)} (at most {man_pages} man pages): {texts.passages} passages of 40-200 words "
            f"after dropping boilerplate and near-duplicates (median {words[len(words) // 2]} words); {len(texts.bank)} banked, "
            f"{len(texts.distractors)} distractors (each under one edit, in turn), {per_edit} banked passages under each edit.")
    return material(texts, seed, per_edit, edits, [note])
