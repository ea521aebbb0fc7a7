"""Open-loop load tests of a running service, and the capacity model read from their reports.

Open loop: requests leave on a schedule (Poisson arrivals at the step's rate) whether or not
earlier ones have returned, and latency counts from the scheduled time, so a slow server
cannot slow the test down and hide its queueing (coordinated omission). That is why this is
not Locust: Locust's users wait for each response before the next request, which makes it a
closed-loop tool whose offered load falls as the server saturates. The HTTP client is aiohttp
(already installed with Ray), one session, up to `max_in_flight` requests at once; a request
that finds the client at that limit counts as an error ("client_limit"), never as queued.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import os
import random
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

KINDS = ("hash", "photo", "text", "bank")
LOAD_BANK = "loadtest"


@dataclass
class Payloads:
    """What each kind of request sends: PDQ hashes, JPEG photos, texts."""

    hashes: list[str]
    photos: list[bytes]
    texts: list[str]

    @classmethod
    def make(cls, photo_dir: str | None = None, seed: int = 0, count: int = 64) -> "Payloads":
        rng = np.random.default_rng(seed)
        hashes = [rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex() for _ in range(count)]
        words = "match bank known content copy edit photo video text caption post share team report".split()
        texts = [" ".join(rng.choice(words, int(rng.integers(8, 40)))) for _ in range(count)]
        return cls(hashes, _photos(photo_dir, rng, count), texts)


def _photos(photo_dir: str | None, rng, count: int) -> list[bytes]:
    from PIL import Image

    if photo_dir:
        files = sorted(p for p in Path(photo_dir).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
        if not files:
            raise ValueError(f"no photos (.jpg, .png, .webp) under {photo_dir}")
        return [f.read_bytes() for f in files[:count]]
    photos = []
    for i in range(count):  # fractal detail at seeded zooms: decodable, hashable, distinct
        x, y, zoom = rng.uniform(-1.5, 0.3), rng.uniform(-0.8, 0.8), rng.uniform(0.05, 1.0)
        image = Image.effect_mandelbrot((320, 240), (x - zoom, y - zoom, x + zoom, y + zoom), 80).convert("RGB")
        out = io.BytesIO()
        image.save(out, "JPEG", quality=85)
        photos.append(out.getvalue())
    return photos


def parse_mix(text: str) -> dict[str, float]:
    """'hash=60,photo=20,text=15,bank=5' -> normalised weights."""
    mix = {}
    for part in text.split(","):
        kind, _, weight = part.partition("=")
        if kind.strip() not in KINDS or not weight.strip().replace(".", "", 1).isdigit():
            raise ValueError(f"bad mix part {part!r}: use kind=weight with kinds {', '.join(KINDS)}")
        mix[kind.strip()] = float(weight)
    total = sum(mix.values())
    if total <= 0:
        raise ValueError("the mix needs a positive weight")
    return {k: v / total for k, v in mix.items() if v > 0}


@dataclass
class StepResult:
    offered_qps: float
    seconds: float
    latencies: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    errors: dict[str, int] = field(default_factory=dict)  # reason -> count
    sent: int = 0

    def summary(self) -> dict[str, Any]:
        every = [x for values in self.latencies.values() for x in values]
        failed = sum(self.errors.values())
        out = {
            "offered_qps": self.offered_qps,
            "sent_qps": round(self.sent / self.seconds, 2),  # the Poisson schedule's actual rate
            "achieved_qps": round(len(every) / self.seconds, 2),
            "sent": self.sent,
            "ok": len(every),
            "error_rate": round(failed / self.sent, 4) if self.sent else 0.0,
            "errors": dict(self.errors),
            **percentiles(every),
            "by_kind": {k: {"ok": len(v), **percentiles(v)} for k, v in self.latencies.items() if v},
        }
        return out


def percentiles(seconds: list[float]) -> dict[str, float | None]:
    if not seconds:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    ms = np.asarray(seconds) * 1000
    return {f"p{q}_ms": round(float(np.percentile(ms, q)), 2) for q in (50, 95, 99)}


class LoadTest:
    def __init__(self, url: str, token: str | None, mix: dict[str, float], payloads: Payloads, max_in_flight: int = 512, seed: int = 0, timeout: float = 30):
        self.url, self.mix, self.payloads = url.rstrip("/"), mix, payloads
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.max_in_flight, self.timeout = max_in_flight, timeout
        self.rng = random.Random(seed)

    async def prepare(self, session) -> None:
        """The bank that bank-write requests fill (created if it is missing)."""
        if "bank" not in self.mix:
            return
        async with session.post(f"{self.url}/v1/banks", json={"name": LOAD_BANK, "description": "mediamatch loadtest writes"}, headers=self.headers) as r:
            if r.status not in (201, 409):
                raise RuntimeError(f"cannot create bank {LOAD_BANK!r} for the bank writes: HTTP {r.status} {await r.text()}")

    async def step(self, session, rate: float, seconds: float, max_requests: int | None, tick: Callable[[], None]) -> StepResult:
        result = StepResult(offered_qps=rate, seconds=seconds)
        kinds, weights = zip(*self.mix.items())
        in_flight: set[asyncio.Task] = set()
        started = time.perf_counter()
        at = 0.0
        while True:
            at += self.rng.expovariate(rate)
            if at >= seconds or (max_requests and result.sent >= max_requests):
                break
            delay = started + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            result.sent += 1
            tick()
            if len(in_flight) >= self.max_in_flight:
                result.errors["client_limit"] = result.errors.get("client_limit", 0) + 1
                continue
            kind = self.rng.choices(kinds, weights)[0]
            task = asyncio.create_task(self.send(session, kind, started + at, result))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        if in_flight:
            await asyncio.wait(in_flight, timeout=self.timeout)
        return result

    async def send(self, session, kind: str, scheduled: float, result: StepResult) -> None:
        import aiohttp

        p, pick = self.payloads, self.rng.randrange
        try:
            if kind == "hash":
                call = session.post(f"{self.url}/v1/match", json={"signals": {"pdq": p.hashes[pick(len(p.hashes))]}}, headers=self.headers)
            elif kind == "text":
                call = session.post(f"{self.url}/v1/match", json={"text": p.texts[pick(len(p.texts))]}, headers=self.headers)
            elif kind == "bank":
                value = self.rng.getrandbits(256).to_bytes(32, "big").hex()
                call = session.post(f"{self.url}/v1/banks/{LOAD_BANK}/entries", json={"signals": {"pdq": value}}, headers=self.headers)
            else:
                form = aiohttp.FormData()
                form.add_field("file", p.photos[pick(len(p.photos))], filename="photo.jpg", content_type="image/jpeg")
                call = session.post(f"{self.url}/v1/match", data=form, headers=self.headers)
            async with call as response:
                await response.read()
                status = response.status
        except Exception as exc:
            reason = type(exc).__name__
        else:
            if status < 300:
                result.latencies[kind].append(time.perf_counter() - scheduled)
                return
            reason = f"http_{status}"
        result.errors[reason] = result.errors.get(reason, 0) + 1

    @asynccontextmanager
    async def session(self):
        """A client session, with the bank that bank writes fill."""
        import aiohttp

        connector = aiohttp.TCPConnector(limit=self.max_in_flight)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout)) as session:
            await self.prepare(session)
            yield session

    async def run(
        self, rates: list[float], seconds: float, max_requests: int | None, progress: Callable[[str, int], Callable[[], None]], warmup: float = 5
    ) -> list[dict]:
        async with self.session() as session:
            if warmup:  # first requests pay for cold caches and lazy loading: not counted
                await self.step(session, rates[0], warmup, max_requests, progress("warm-up", int(rates[0] * warmup)))
            steps = []
            for rate in rates:
                tick = progress(f"{rate:g} req/s", int(rate * seconds))
                steps.append((await self.step(session, rate, seconds, max_requests, tick)).summary())
            return steps

    async def soak(
        self, rate: float, periods: int, period_seconds: float, memory: Callable[[], dict[str, int]],
        on_period: Callable[[int, StepResult, dict[str, int]], None], warmup: float = 5,
    ) -> tuple[list[StepResult], list[dict[str, int]]]:
        """`periods` steps of `period_seconds` at one rate, back to back; after each, the
        replicas' resident memory (`memory()`). The steps and the samples."""
        async with self.session() as session:
            if warmup:
                await self.step(session, rate, warmup, None, lambda: None)
            steps, samples = [], []
            for i in range(periods):
                steps.append(await self.step(session, rate, period_seconds, None, lambda: None))
                samples.append(await asyncio.to_thread(memory))
                on_period(i, steps[-1], samples[-1])
            return steps, samples


# -- soak ----------------------------------------------------------------------------------------
SOAK_P99_GROWTH = 0.20  # the last window's p99 at most 20% over the first's
SOAK_RSS_GROWTH = 0.10  # every replica's resident memory at most 10% over its size after warm-up


def serving_raylet(port: int):
    """The raylet (a `psutil.Process`) of the Ray node whose proxy listens on `port` on this
    machine (HAProxy or Serve's proxy: both its descendants), or None."""
    import psutil

    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            listener = psutil.Process(conn.pid)
            return next((p for p in (listener, *listener.parents()) if p.name() == "raylet"), None)
    return None


def replica_memory(raylet, app: str = "mediamatch") -> dict[str, int]:
    """Resident bytes of each Serve replica of `app` under `raylet` (other Ray instances on the
    machine run replicas of the same names), found by the process title Ray gives its workers
    (`ray::ServeReplica:<app>:<deployment>`, and `.<method>` after it while it runs one), by
    `<deployment>#<pid>`: a replica replaced meanwhile is a new key."""
    import psutil

    prefix, out = f"ray::ServeReplica:{app}:", {}
    for process in raylet.children():
        try:
            title, rss = process.cmdline()[0], process.memory_info().rss
        except (psutil.Error, IndexError):  # gone meanwhile
            continue
        if title.startswith(prefix):
            out[f"{title.removeprefix(prefix).split('.')[0]}#{process.pid}"] = rss
    return out


def pooled(steps: list[StepResult]) -> dict[str, Any]:
    """Requests, errors and latency percentiles of several steps taken together."""
    every = [x for step in steps for values in step.latencies.values() for x in values]
    return {"sent": sum(s.sent for s in steps), "ok": len(every), "errors": sum(sum(s.errors.values()) for s in steps), **percentiles(every)}


def soak_report(rate: float, period_seconds: float, steps: list[StepResult], samples: list[dict[str, int]], window: int = 5) -> dict[str, Any]:
    """The soak's verdict: no error; p99 flat (the last `window` periods' p99 at most 20% over
    the first's; with fewer than 3 windows' worth, a third of the run each); every replica's
    memory at most 10% over what it was after the first window (the warm-up), none replaced
    (a replica gone while its deployment started another; one scaled down is only reported)."""
    window = max(1, min(window, len(steps) // 3))
    first, last, total = pooled(steps[:window]), pooled(steps[-window:]), pooled(steps)
    errors: dict[str, int] = {}
    for step in steps:
        for reason, count in step.errors.items():
            errors[reason] = errors.get(reason, 0) + count
    warm, end = samples[window - 1], samples[-1]
    growth = {name: round(end[name] / rss - 1, 4) for name, rss in warm.items() if name in end}
    gone, new = sorted(set(warm) - set(end)), sorted(set(end) - set(warm))
    # a replica gone while its deployment started another was replaced (it died); one gone alone was scaled down
    replaced = [name for name in gone if any(n.split("#")[0] == name.split("#")[0] for n in new)]
    p99_ratio = round(last["p99_ms"] / first["p99_ms"], 3) if first["p99_ms"] and last["p99_ms"] else None
    checks = {
        "no errors": total["errors"] == 0 and total["ok"] > 0,
        f"p99 flat (last/first <= {1 + SOAK_P99_GROWTH:g})": p99_ratio is not None and p99_ratio <= 1 + SOAK_P99_GROWTH,
        f"replica memory (growth <= {SOAK_RSS_GROWTH:.0%}, none replaced)": bool(growth) and not replaced and max(growth.values()) <= SOAK_RSS_GROWTH,
    }
    return {
        "rate_qps": rate,
        "period_seconds": period_seconds,
        "window_periods": window,
        "total": total,
        "errors": errors,
        "first_window": first,
        "last_window": last,
        "p99_ratio": p99_ratio,
        "rss_after_warmup": warm,
        "rss_end": end,
        "rss_growth": growth,
        "replaced": replaced,
        "scaled_down": [name for name in gone if name not in replaced],
        "started": new,  # by autoscaling or to replace one: not compared
        "periods": [{**s.summary(), "rss_bytes": sum(m.values())} for s, m in zip(steps, samples)],
        "checks": checks,
        "passed": all(checks.values()),
    }


def saturation(steps: list[dict], p99_ms: float | None = None) -> float | None:
    """The first offered rate the service did not sustain: under 90% of the requests sent
    answered, over 1% errors, or (given an SLO) p99 above it. None: every step was sustained."""
    for step in steps:
        if step["achieved_qps"] < 0.9 * step.get("sent_qps", step["offered_qps"]) or step["error_rate"] > 0.01 or (p99_ms and (step["p99_ms"] or math.inf) > p99_ms):
            return step["offered_qps"]
    return None


def write_report(report: dict, out_dir: str) -> tuple[str, str]:
    """loadtest.json and loadtest.png (latency and achieved rate against offered rate)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    json_path, png_path = os.path.join(out_dir, "loadtest.json"), os.path.join(out_dir, "loadtest.png")
    with open(json_path, "w") as f:
        json.dump(report, f, indent=2)
    steps = report["steps"]
    offered = [s["offered_qps"] for s in steps]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for q in ("p50", "p95", "p99"):
        left.plot(offered, [s[f"{q}_ms"] for s in steps], marker="o", label=q)
    left.set(xlabel="offered load (requests/s)", ylabel="latency (ms)", yscale="log", title="latency against load")
    right.plot(offered, [s["achieved_qps"] for s in steps], marker="o", label="achieved")
    right.plot(offered, offered, linestyle=":", color="grey", label="offered")
    right.set(xlabel="offered load (requests/s)", ylabel="requests/s", title="throughput and errors")
    errors = right.twinx()
    errors.bar(offered, [100 * s["error_rate"] for s in steps], width=max(offered) / 40, alpha=0.3, color="red")
    errors.set_ylabel("errors (%)")
    errors.set_ylim(bottom=0, top=max(1.0, *(100 * s["error_rate"] * 1.2 for s in steps)))
    if report.get("saturation_qps"):
        for axis in (left, right):
            axis.axvline(report["saturation_qps"], color="red", linestyle="--", label="saturation")
    left.legend()
    right.legend(loc="upper left")
    fig.suptitle(f"mediamatch loadtest — {report['url']} — mix {report['mix']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return json_path, png_path


# -- capacity ------------------------------------------------------------------------------------
def sustainable(steps: list[dict], p99_ms: float) -> dict | None:
    """The highest step that was sustained (≥ 95% achieved, ≤ 1% errors) within the p99 target."""
    good = [s for s in steps if s["achieved_qps"] >= 0.95 * s.get("sent_qps", s["offered_qps"]) and s["error_rate"] <= 0.01 and s["p99_ms"] is not None and s["p99_ms"] <= p99_ms]
    return max(good, key=lambda s: s["achieved_qps"]) if good else None


def capacity(report: dict, target_qps: float, p99_ms: float) -> dict[str, Any]:
    """Replicas, CPUs and GPUs for `target_qps` at p99 ≤ `p99_ms`, scaling the measured
    service out linearly in whole copies of its measured shape (replicas behind one proxy
    scale close to linearly while the object store and the catalog are not the bottleneck;
    the answer says so rather than pretending otherwise)."""
    best = sustainable(report["steps"], p99_ms)
    if best is None:
        raise ValueError(f"no step of this loadtest met p99 <= {p99_ms:g} ms with <= 1% errors: measure at lower rates")
    per_copy = best["achieved_qps"]
    copies = max(1, math.ceil(target_qps / per_copy))
    shape = report["shape"]
    concurrency = best["achieved_qps"] * (best["p50_ms"] or 0) / 1000  # Little's law, in one copy
    deployments = {}
    for name, d in shape["deployments"].items():
        replicas = d["replicas"] * copies
        deployments[name] = {
            "replicas": replicas,
            "autoscaling_config": {
                "min_replicas": replicas,
                "max_replicas": 2 * replicas,
                "target_ongoing_requests": round(max(1.0, concurrency / max(1, d["replicas"])), 1),
            },
        }
    return {
        "target_qps": target_qps,
        "p99_ms": p99_ms,
        "measured": {"sustained_qps": per_copy, "at_offered_qps": best["offered_qps"], "p99_ms": best["p99_ms"], "cpus": shape["cpus"], "gpus": shape["gpus"]},
        "copies": copies,
        "cpus": copies * shape["cpus"],
        "gpus": copies * shape["gpus"],
        "deployments": deployments,
        "assumption": "linear scale-out in copies of the measured shape; the object store, the catalog and the network are not the bottleneck",
    }
