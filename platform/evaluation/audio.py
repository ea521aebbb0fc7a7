"""Audio: sound files under folders or object-store prefixes, and speech that espeak-ng renders
from passages of documents (several voices and speeds), edited with PyAV.

Sound files: the longest distinct ones (by decoded audio: copies under several names, which
differ only in their tags, count once) of at least 3 s. Half of all items (a seeded draw) is
banked, as WAV; every item, banked or not, goes through every edit: re-encodes (mp3, ogg/vorbis,
aac, opus), volume, a 10-second excerpt, white noise, +-5 % speed, and combinations. Edits
whose encoder this FFmpeg build lacks are left out (and said so)."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import tempfile
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from ..errors import InvalidInput
from ..signals import audio as A
from .core import Material, Query, query_rng

SIGNALS = ("audio_fingerprint", "md5")
AUDIO_SUFFIXES = (".ogg", ".oga", ".wav", ".flac", ".mp3", ".opus", ".m4a")
WORK_RATE = 22050
MIN_BYTES = 40_000  # smaller files are clicks and beeps
MIN_SECONDS = 3.0
VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-us+f3", "en-gb+m3", "en-us+f2"]
Samples = np.ndarray  # float32 mono at WORK_RATE


def decode(data: bytes) -> Samples:
    return A.decode_audio(data, WORK_RATE, 3600)


# -- material ----------------------------------------------------------------------------------
def speech_texts(sources: Sequence[str], count: int, seed: int) -> list[str]:
    """`count` distinct passages of the documents under `sources` (`text.passages`), cut to
    300-460 characters at a word and kept to what espeak-ng reads as words."""
    from .text import passages

    rng = np.random.default_rng(seed)
    out = []
    for _, passage in passages(sources, seed, man_pages=0):
        passage = re.sub(r"\S+@\S+|<[^>]*>|https?://\S+", " ", passage)
        passage = " ".join(re.sub(r"[^A-Za-z0-9.,;:!?' ()-]", " ", passage).split())
        cut = passage[: int(rng.integers(300, 460))]
        out.append(cut.rsplit(" ", 1)[0] if len(passage) > len(cut) else cut)
        if len(out) == count:
            return out
    raise InvalidInput(f"{len(out)} passages under {', '.join(sources)} to speak, fewer than {count}")


def render_speech(texts: Sequence[str], seed: int) -> list[tuple[str, Samples]]:
    """Each text spoken by espeak-ng, the voices in turn, at a seeded 140-200 words a minute."""
    if not shutil.which("espeak-ng"):
        raise InvalidInput("espeak-ng is not installed (apt-get install espeak-ng): no speech to render")
    rng = np.random.default_rng(seed)
    items = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(texts):
            voice, speed = VOICES[i % len(VOICES)], int(rng.integers(140, 200))
            path = os.path.join(tmp, f"{i}.wav")
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", path, text], check=True, capture_output=True)
            with open(path, "rb") as f:
                items.append((f"espeak-ng {voice} {speed} wpm: {text[:40]}...", decode(f.read())))
    return items


def sound_files(sources: Sequence[str], count: int) -> list[tuple[str, Samples]]:
    """The `count` longest distinct (by decoded audio) sound files of at least MIN_SECONDS under `sources`."""
    from pyarrow import fs as pafs

    from ..storage import ObjectStore

    files = []
    for source in sources:
        store = ObjectStore(source)
        keys = [k for k in store.list() if k.lower().endswith(AUDIO_SUFFIXES) and "backgrounds" not in k and "wallpaper" not in k]
        sizes = {info.path: info.size for info in store.fs.get_file_info([store.path(k) for k in keys]) if info.type == pafs.FileType.File}
        files += [(sizes[store.path(k)], k, store) for k in keys if sizes.get(store.path(k), 0) > MIN_BYTES]
    files.sort(key=lambda f: (-f[0], f[1]))
    items, seen = [], set()
    for _, key, store in files:
        try:
            x = decode(store.get(key))
        except Exception:  # not decodable after all
            continue
        # copies under several names (w_/b_ chess pieces) differ only in tags: same audio
        seconds = round(len(x) / WORK_RATE, 2)
        digest = hashlib.md5(np.round(x[::97], 3).tobytes()).hexdigest()
        if seconds in seen or digest in seen or seconds < MIN_SECONDS:
            continue
        seen.update((seconds, digest))
        items.append((key, x))
        if len(items) == count:
            break
    return items


# -- edits -------------------------------------------------------------------------------------
def encode(x: Samples, fmt: str, codec: str, rate: int = WORK_RATE, bit_rate: int | None = None, channels: int = 1) -> bytes:
    import av

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


def wav(x: Samples) -> bytes:
    return encode(x, "wav", "pcm_s16le")


def excerpt(x: Samples, seconds: float = 10.0) -> Samples:
    n = min(len(x), int(seconds * WORK_RATE))
    start = (len(x) - n) // 2
    return x[start : start + n]


def noise(x: Samples, snr_db: float, rng: np.random.Generator) -> Samples:
    power = float(np.mean(x.astype(np.float64) ** 2))
    return x + rng.normal(0, np.sqrt(power / 10 ** (snr_db / 10)), len(x)).astype(np.float32)


def speed(x: Samples, factor: float) -> Samples:
    """Played `factor` times faster (pitch and tempo)."""
    return A._resample(x, 1.0 / factor)


CODECS: dict[str, Callable[[Samples], bytes]] = {
    "mp3": lambda x: encode(x, "mp3", "libmp3lame", bit_rate=64_000),
    "ogg": lambda x: encode(x, "ogg", "vorbis", channels=2),
    "aac": lambda x: encode(x, "adts", "aac", bit_rate=48_000),
    "opus": lambda x: encode(x, "ogg", "libopus", rate=48_000, bit_rate=24_000),
}
# name -> (the codec it needs or None, function(samples, rng) -> bytes)
EDITS: dict[str, tuple[str | None, Callable[[Samples, np.random.Generator], bytes]]] = {
    "original (wav)": (None, lambda x, rng: wav(x)),
    "mp3 64k": ("mp3", lambda x, rng: CODECS["mp3"](x)),
    "ogg vorbis": ("ogg", lambda x, rng: CODECS["ogg"](x)),
    "aac 48k": ("aac", lambda x, rng: CODECS["aac"](x)),
    "opus 24k": ("opus", lambda x, rng: CODECS["opus"](x)),
    "volume x0.3": (None, lambda x, rng: wav(0.3 * x)),
    "volume x2 (clipped)": (None, lambda x, rng: wav(np.clip(2 * x, -1, 1))),
    "10 s excerpt": (None, lambda x, rng: wav(excerpt(x))),
    "noise 20 dB": (None, lambda x, rng: wav(noise(x, 20, rng))),
    "noise 10 dB": (None, lambda x, rng: wav(noise(x, 10, rng))),
    "speed +5%": (None, lambda x, rng: wav(speed(x, 1.05))),
    "speed -5%": (None, lambda x, rng: wav(speed(x, 0.95))),
    "excerpt + mp3": ("mp3", lambda x, rng: CODECS["mp3"](excerpt(x))),
    "noise 20 dB + speed +5%": (None, lambda x, rng: wav(speed(noise(x, 20, rng), 1.05))),
    "excerpt + speed -3% + aac": ("aac", lambda x, rng: CODECS["aac"](speed(excerpt(x), 0.97))),
}
SUITE = tuple(EDITS)


def working_codecs() -> dict[str, bool]:
    """Which of CODECS this FFmpeg build encodes (and decodes back)."""
    tone = np.sin(np.arange(WORK_RATE) * 0.1).astype(np.float32)
    out = {}
    for name, fn in CODECS.items():
        try:
            out[name] = len(A.decode_audio(fn(tone), A.SAMPLE_RATE)) > 1000
        except Exception:  # encoder missing in this FFmpeg build
            out[name] = False
    return out


def banked_split(count: int, seed: int) -> list[int]:
    """The items banked: a seeded half."""
    return sorted(np.random.default_rng(seed).permutation(count)[: count // 2].tolist())


def make_queries(items: Sequence[tuple[str, Samples]], truth: dict[int, int], seed: int, edits: Sequence[str]) -> Iterator[Query]:
    for name in edits:
        for i, (label, x) in enumerate(items):
            yield Query(EDITS[name][1](x, query_rng(seed, name, i)), name, truth.get(i), label)


def material(items: Sequence[tuple[str, Samples]], seed: int = 0, edits: Iterable[str] = SUITE, notes: Sequence[str] = ()) -> Material:
    if len(items) < 2:
        raise InvalidInput(f"{len(items)} audio items: at least 2 are needed (half banked, half distractors)")
    edits = list(edits)
    codecs = working_codecs()
    missing = [e for e in edits if EDITS[e][0] is not None and not codecs[EDITS[e][0]]]
    edits = [e for e in edits if e not in missing]
    banked = banked_split(len(items), seed)
    truth = {i: n for n, i in enumerate(banked)}
    seconds = np.array([len(x) / WORK_RATE for _, x in items])
    note = (f"{len(items)} items of {seconds.min():.1f}-{seconds.max():.1f} s (median {np.median(seconds):.1f} s), "
            f"{len(banked)} banked (as WAV); every item under each edit.")
    if missing:
        note += f" Left out, their encoder missing from this FFmpeg build: {', '.join(missing)}."
    return Material("audio", [wav(items[i][1]) for i in banked], [items[i][0] for i in banked],
                    lambda: make_queries(items, truth, seed, edits), len(edits) * len(items), len(items) - len(banked), [*notes, note])


def load_material(sources: Sequence[str] = (), sounds: int = 30, speech: int = 0, speech_sources: Sequence[str] = ("/usr/share/doc",),
                  seed: int = 0, edits: Iterable[str] = SUITE) -> Material:
    """Up to `sounds` sound files under `sources` and `speech` espeak-ng passages of the documents under `speech_sources`."""
    spoken = render_speech(speech_texts(speech_sources, speech, seed), seed) if speech else []
    found = sound_files(sources, sounds) if sources else []
    parts = [f"{len(spoken)} espeak-ng passages of documents under {', '.join(speech_sources)} ({len(VOICES)} voices in turn, "
             "140-200 words a minute)"] if speech else []
    parts += [f"the {len(found)} longest distinct sound files (at least {MIN_SECONDS:g} s) under {', '.join(sources)}"] if sources else []
    return material(spoken + found, seed, edits, ["Audio: " + "; ".join(parts) + "."])
