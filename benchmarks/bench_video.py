"""Compute speed of the video signals (vpdq, video_embedding, md5) on the eval harness's video
material: seconds of video hashed per second of CPU and of wall time.

The material is `mediamatch eval --videos`'s (platform/evaluation/video.py): by default the
ThreatExchange TMK sample videos in shared/conformance/tmk/sample-videos, every item and every
edit of it, at the service's sampling rate (`limits.video_fps`). Match quality is the harness's
job (`mediamatch eval --videos ...`); this measures only the cost of `compute` (and of
`compute_query`, video_embedding's denser query form).

    nice -n 15 .venv/bin/python benchmarks/bench_video.py                 # all edits (about 3 min)
    nice -n 15 .venv/bin/python benchmarks/bench_video.py --edit "exact copy" --edit "downscale 50%"
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from tables import print_table

from mediamatch.platform.evaluation import video
from mediamatch.platform.settings import LimitSettings
from mediamatch.platform.signals import get_signal_type

VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "tmk" / "sample-videos"
if not VIDEOS.is_dir():
    VIDEOS = Path("/work/shared/conformance/tmk/sample-videos")
LIMITS = LimitSettings(max_upload_bytes=10**9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", action="append", help=f"a folder of videos (repeatable; default {VIDEOS})")
    parser.add_argument("--signals", nargs="+", default=list(video.SIGNALS), choices=video.SIGNALS)
    parser.add_argument("--edit", action="append", help="only these edits (repeatable; default: every edit)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    material = video.load_material(args.videos or [str(VIDEOS)], args.seed, args.edit or video.SUITE)
    if "video_embedding" in args.signals:
        get_signal_type("video_embedding").warm_up()
    forms = [(s, "compute") for s in args.signals] + [(s, "compute_query") for s in args.signals if get_signal_type(s).query_form]
    rows: dict[str, list[tuple[float, float, float]]] = {}  # (video s, CPU s, wall s) per signal and form
    for data in [*material.references, *(q.content for q in material.queries())]:
        seconds = video.probe(data)[3]
        for name, form in forms:
            c0, w0 = time.process_time(), time.perf_counter()
            getattr(get_signal_type(name), form)(data, LIMITS)
            key = name if form == "compute" else f"{name} (as a query)"
            rows.setdefault(key, []).append((seconds, time.process_time() - c0, time.perf_counter() - w0))
    table = []
    for name, measured in rows.items():
        a = np.array(measured)
        table.append([name, len(a), f"{a[:, 0].sum():.0f}", f"{a[:, 1].sum():.1f}", f"{a[:, 2].sum():.1f}",
                      f"{a[:, 0].sum() / max(a[:, 1].sum(), 1e-9):.1f}", f"{a[:, 0].sum() / max(a[:, 2].sum(), 1e-9):.1f}",
                      f"{1000 * np.median(a[:, 2]):.0f}"])
    print_table(f"Compute speed (`compute` of every banked and query video, {LIMITS.video_fps:g} frame/s sampled, and "
                f"`compute_query` where a query is computed otherwise; every frame decoded; CPU = all threads of this process)",
                ["signal", "videos", "video s", "CPU s", "wall s", "video s per CPU s", "video s per wall s", "median wall ms per video"], table)


if __name__ == "__main__":
    main()
