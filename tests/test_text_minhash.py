"""text_minhash: stable across processes, blind to formatting, close for near-copies, far for unrelated text."""

from __future__ import annotations

import difflib
import heapq
import json
import os
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

from mediamatch.platform.errors import InvalidInput
from mediamatch.platform.signals.hashes import normalize_text
from mediamatch.platform.signals.text_minhash import TextMinHash, _char_shingles

SIG = TextMinHash()

PASSAGE = (
    "The package manager keeps a database of every installed file. When a package is removed, "
    "its configuration files are kept unless the purge option is given, so that reinstalling it "
    "later restores the administrator's local changes. Use the list command to see which packages "
    "are installed and which version each of them has, and the search command to find the package "
    "that owns a given file on the system."
)


def value(text: str) -> str:
    signal = SIG.compute(text)
    assert signal.value is not None, signal.reason
    return signal.value


def jaccard(a: str, b: str) -> float:
    x = set(_char_shingles(normalize_text(a), SIG.shingle_size).tolist())
    y = set(_char_shingles(normalize_text(b), SIG.shingle_size).tolist())
    return len(x & y) / len(x | y)


def test_value_shape_and_estimate():
    v = value(PASSAGE)
    assert len(v) == SIG.dim // 4 == 64 and v == v.lower()
    assert SIG.parse(v) == v
    assert SIG.encode([v, v]).shape == (2, SIG.dim // 8)
    assert SIG.distance(v, v) == 0 and SIG.score(0) == 1.0
    assert SIG.score(SIG.dim / 4) == pytest.approx(0.5) and SIG.score(SIG.dim / 2) == 0.0 and SIG.score(SIG.dim) == 0.0
    assert SIG.dim % 16 == 0 and SIG.default_threshold < SIG.dim / 4  # estimated Jaccard >= 0.5 at the threshold


def test_deterministic_across_processes():
    code = (
        "import sys; from mediamatch.platform.signals.text_minhash import TextMinHash; "
        "print(TextMinHash().compute(sys.stdin.read()).value)"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], input=PASSAGE, env=env, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == value(PASSAGE) == TextMinHash().compute(PASSAGE).value


def test_golden_value():
    # The algorithm is part of the stored data: if this changes, every banked text_minhash
    # signature stops comparing with new ones and the index must be rebuilt from the texts.
    assert value(PASSAGE) == "eccf98b97a46637a73dd214b36ee29175254c97fb7b02908a5f07f85430cb3f9"


def test_case_punctuation_whitespace_are_ignored():
    variant = "  THE package-manager keeps a database of every installed file!!\n\nwhen A package is REMOVED" + PASSAGE[PASSAGE.index(","):].upper()
    assert normalize_text(variant) == normalize_text(PASSAGE)
    assert SIG.distance(value(variant), value(PASSAGE)) == 0
    assert SIG.distance(value(PASSAGE.replace(" ", "\t  ")), value(PASSAGE)) == 0


def test_near_copies_match_within_threshold():
    typos = PASSAGE.replace("database", "databse").replace("restores", "restore s").replace("version", "verison")
    inserted = PASSAGE.replace("restores the administrator's local changes.", "restores the administrator's local changes. This has been true since the first release.")
    truncated = PASSAGE[: int(len(PASSAGE) * 0.8)]
    for copy in (typos, inserted, truncated):
        d = SIG.distance(value(copy), value(PASSAGE))
        assert 0 < d <= SIG.default_threshold, (d, copy)
        assert SIG.score(d) == pytest.approx(jaccard(copy, PASSAGE), abs=0.2)  # an estimate of the true Jaccard


def unrelated_passages() -> list[str]:
    """First paragraphs of stdlib module docstrings: real, unrelated English, present everywhere."""
    out = []
    for module in (json, heapq, difflib, textwrap, zipfile, subprocess):
        doc = " ".join(module.__doc__.split())
        out.append(" ".join(doc.split()[:80]))
    return [PASSAGE] + [p for p in out if len(p.split()) >= 20]


def test_unrelated_passages_are_far_apart():
    texts = unrelated_passages()
    assert len(texts) >= 5
    values = [value(t) for t in texts]
    for i in range(len(values)):
        for j in range(i + 1, len(values)):
            d = SIG.distance(values[i], values[j])
            assert d > SIG.default_threshold + 30, (d, texts[i][:60], texts[j][:60])
            assert SIG.score(d) < 0.3


def test_short_texts_have_no_value_and_say_why():
    for short in ("hello", "Hello, world!", "one two three four", "  a -- b -- c -- d  "):
        signal = SIG.compute(short)
        assert signal.value is None and "too short" in signal.reason and "text_exact" in signal.reason
    assert SIG.compute("one two three four five").value is not None
    with pytest.raises(InvalidInput):
        SIG.compute("   ")  # empty text is an input error, as for every text signal


@pytest.mark.parametrize(
    "bad",
    [None, 42, "", "abc", "zz" * 32, "0" * 63, "0" * 65, "0" * 128, ["0" * 64], b"0" * 64],
)
def test_parse_rejects_malformed_values(bad):
    with pytest.raises(InvalidInput):
        SIG.parse(bad)


def test_parse_canonicalises_case():
    assert SIG.parse("AB" * 32) == "ab" * 32


def test_batch_equals_one_at_a_time():
    rng = np.random.default_rng(0)
    words = " ".join(unrelated_passages()).split()
    texts: list[str | bytes] = [" ".join(rng.choice(words, size=int(n))) for n in rng.integers(1, 120, size=40)]
    texts[3] = " ".join(rng.choice(words, size=2000))  # > one vectorised block of shingles
    texts[4] = texts[4].encode()  # bytes are decoded as UTF-8
    texts.append("Ünïcödé façade — ﬁne “quotes” and ｆｕｌｌｗｉｄｔｈ letters here")
    batch = SIG.compute_batch(texts)
    single = [SIG.compute(t) for t in texts]
    assert [s.value for s in batch] == [s.value for s in single]
    assert [s.reason for s in batch] == [s.reason for s in single]
    assert any(s.value is None for s in batch) and any(s.value is not None for s in batch)
    assert SIG.compute_batch([]) == []
