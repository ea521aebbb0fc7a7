"""`mediamatch loadtest --soak`: the verdict's criteria, and a short soak of the session's service
(`make soak` runs the 20-minute one against `mediamatch serve`)."""

from __future__ import annotations

import json

from mediamatch.platform.loadtest import StepResult, soak_report

MiB = 2**20


def period(latencies_ms: list[float], errors: int = 0) -> StepResult:
    step = StepResult(offered_qps=10, seconds=60)
    step.latencies["hash"] = [ms / 1000 for ms in latencies_ms]
    step.sent = len(latencies_ms) + errors
    if errors:
        step.errors["http_503"] = errors
    return step


def test_the_soak_verdict_checks_errors_p99_drift_and_memory_growth():
    flat = [period([20.0] * 99 + [100.0]) for _ in range(15)]
    memory = [{"Ingress#1": 300 * MiB, "Searcher-0#2": 400 * MiB}] * 15
    report = soak_report(10, 60, flat, memory)
    assert report["passed"] and report["window_periods"] == 5 and report["p99_ratio"] == 1.0

    slower = flat[:10] + [period([20.0] * 90 + [150.0] * 10) for _ in range(5)]  # the last 5 minutes' p99 1.5x
    assert soak_report(10, 60, slower, memory)["checks"] == {**report["checks"], "p99 flat (last/first <= 1.2)": False}

    growing = memory[:14] + [{"Ingress#1": 300 * MiB, "Searcher-0#2": 441 * MiB}]  # +10.25% after the warm-up window
    grown = soak_report(10, 60, flat, growing)
    assert not grown["passed"] and grown["rss_growth"] == {"Ingress#1": 0.0, "Searcher-0#2": 0.1025}

    replaced = memory[:14] + [{"Ingress#1": 300 * MiB, "Searcher-0#9": 300 * MiB}]
    assert soak_report(10, 60, flat, replaced)["replaced"] == ["Searcher-0#2"]
    assert not soak_report(10, 60, flat, replaced)["passed"]
    scaled = [{**m, "Ingress#3": 300 * MiB} for m in memory[:5]] + memory[5:]  # a second ingress replica, stopped by autoscaling
    assert soak_report(10, 60, flat, scaled)["passed"] and soak_report(10, 60, flat, scaled)["scaled_down"] == ["Ingress#3"]

    failing = flat[:7] + [period([20.0] * 99, errors=1)] + flat[8:]
    assert not soak_report(10, 60, failing, memory)["checks"]["no errors"]
    assert soak_report(10, 60, flat[:6], memory[:6])["window_periods"] == 2  # a short run: a third of it each end


def test_a_short_soak_of_the_service(service, tmp_path):
    """A minute at a modest rate, banking in the mix, sampled every 10 s: no error, every replica
    of the application found and none growing over 10% after the first 20 s; the exit status
    says whether every criterion held (a 20 s window's p99 is too few requests to hold a test to)."""
    from click.testing import CliRunner

    from mediamatch.platform.cli import cli

    args = ["loadtest", "--url", service.url, "--token", service.token("admin"), "--soak", "1", "--sample-seconds", "10", "--rates", "8", "--out", str(tmp_path)]
    result = CliRunner().invoke(cli, args)
    print("\n" + result.output)
    report = json.loads((tmp_path / "soak.json").read_text())
    assert report["total"]["sent"] > 300 and report["total"]["errors"] == 0, report["errors"]
    assert {name.split("#")[0] for name in report["rss_end"]} >= {"Ingress", "Hasher", "Embedder", "Searcher-0"}
    assert report["replaced"] == [] and max(report["rss_growth"].values()) <= 0.10
    assert sum(p["by_kind"].get("bank", {}).get("ok", 0) for p in report["periods"]) > 0  # banking in the mix
    assert result.exit_code == (0 if report["passed"] else 1)


def test_soak_usage_errors():
    from click.testing import CliRunner

    from mediamatch.platform.cli import cli
    from mediamatch.platform.errors import InvalidInput

    for args, says in ((["--rates", "5,10"], "one rate"), (["--rates", "5", "--url", "http://192.0.2.7:8000"], "on this machine"),
                       (["--rates", "5", "--url", "http://127.0.0.1:1"], "no Ray node on this machine serves mediamatch on port 1")):
        result = CliRunner().invoke(cli, ["loadtest", "--soak", "1", *args])
        assert isinstance(result.exception, InvalidInput) and says in str(result.exception), result.output
