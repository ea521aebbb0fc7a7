"""Capacity planning: an open-loop load test of the running service, and the capacity answer."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mediamatch.platform.cli import cli
from mediamatch.platform.loadtest import capacity, parse_mix, saturation


def test_loadtest_report_and_capacity_answer(service, tmp_path):
    out = tmp_path / "report"
    args = ["loadtest", "--url", service.url, "--token", service.token("admin"), "--rates", "4,8", "--step-seconds", "4",
            "--mix", "hash=25,photo=25,text=25,bank=25", "--out", str(out)]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "loadtest.json").read_text())
    assert (out / "loadtest.png").stat().st_size > 10_000
    assert [s["offered_qps"] for s in report["steps"]] == [4, 8]
    assert report["shape"]["source"] == "GET /v1/deployments" and report["shape"]["deployments"]["Ingress"]["replicas"] == 1
    for step in report["steps"]:
        assert step["sent"] > 0 and step["error_rate"] == 0 and step["p99_ms"] >= step["p50_ms"] > 0
    assert set().union(*(step["by_kind"] for step in report["steps"])) == {"hash", "photo", "text", "bank"}
    assert service.ok("GET", "/v1/banks/loadtest")["entry_count"] > 0  # the bank writes landed
    answer = CliRunner().invoke(cli, ["capacity", str(out / "loadtest.json"), "--target-qps", "500", "--p99-ms", "5000", "--json"], catch_exceptions=False)
    plan = json.loads(answer.output)
    assert plan["copies"] >= 500 / max(s["achieved_qps"] for s in report["steps"]) - 1
    assert plan["deployments"]["Ingress"]["autoscaling_config"]["min_replicas"] == plan["copies"]


def test_capacity_model_and_saturation():
    steps = [
        {"offered_qps": 10, "achieved_qps": 10, "error_rate": 0, "p50_ms": 20, "p99_ms": 40},
        {"offered_qps": 20, "achieved_qps": 19.8, "error_rate": 0, "p50_ms": 30, "p99_ms": 90},
        {"offered_qps": 40, "achieved_qps": 25, "error_rate": 0.2, "p50_ms": 900, "p99_ms": 3000},
    ]
    shape = {"deployments": {"Ingress": {"replicas": 1}, "Searcher-pdq-0": {"replicas": 2}}, "cpus": 2, "gpus": 0}
    assert saturation(steps) == 40 and saturation(steps, p99_ms=50) == 20
    plan = capacity({"steps": steps, "shape": shape}, target_qps=100, p99_ms=100)
    assert plan["measured"]["sustained_qps"] == 19.8 and plan["copies"] == 6 and plan["cpus"] == 12
    assert plan["deployments"]["Searcher-pdq-0"]["replicas"] == 12
    with pytest.raises(ValueError, match="no step"):
        capacity({"steps": steps, "shape": shape}, target_qps=100, p99_ms=10)
    assert parse_mix("hash=3,photo=1") == {"hash": 0.75, "photo": 0.25}
    with pytest.raises(ValueError):
        parse_mix("video=1")
