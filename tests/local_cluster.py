"""A real multi-node Ray cluster on this machine, for the chaos tests: a head and worker nodes,
each its own raylet with its own temp dir, ports and custom resource, and `mediamatch serve
--address` deploying onto it. Everything runs in subprocesses, apart from the test's own Ray
instance; every process is found by an environment mark it inherits, so a crash is SIGKILL
by pid of each one (`ray stop` would be a graceful stop, and would touch the test's instance).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import ray  # noqa: F401  (puts its vendored psutil on the path)
import psutil
import requests

from mediamatch.deployments.app import data_plane_env

BIN = Path(sys.executable).parent
MARK = "MEDIAMATCH_TEST_CLUSTER"
# Ray's start-up waits (agents registering, a raylet coming up) sized for a shared, loaded machine
PATIENT = {"RAY_agent_register_timeout_ms": "120000", "RAY_raylet_start_wait_time_s": "120", "RAY_worker_register_timeout_seconds": "120"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


class LocalCluster:
    """`with LocalCluster(tmp_path) as cluster:` a head (no CPUs: drivers, the GCS and the Serve
    controller and proxy) and `workers` nodes of `cpus` CPUs each; all killed on exit."""

    def __init__(self, root: Path, workers: tuple[str, ...] = ("worker_a", "worker_b"), cpus: int = 2):
        self.root, self.workers, self.cpus = Path(root), workers, cpus
        self.id = uuid.uuid4().hex[:8]
        self.taken: set[int] = set()  # ports handed out: no two components may share one
        self.token = uuid.uuid4().hex + uuid.uuid4().hex  # the cluster's own: Ray enables token auth when ~/.ray holds one
        self.gcs_port = self.port()
        self.address = f"127.0.0.1:{self.gcs_port}"
        self.http_port = self.port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.serve_log = self.root / "serve.log"
        self.root.mkdir(parents=True, exist_ok=True)
        self.temp = Path(tempfile.mkdtemp(prefix="mm-cluster-", dir="/tmp"))  # short: Ray's socket paths must fit in 107 bytes

    def port(self) -> int:
        while (port := free_port()) in self.taken:
            pass
        self.taken.add(port)
        return port

    def port_range(self, size: int = 40) -> int:
        """The first of `size` consecutive free ports (for a raylet's workers)."""
        while True:
            start = free_port()
            ports = set(range(start, start + size))
            if start + size < 65000 and not ports & self.taken and all(map(_is_free, ports)):
                self.taken |= ports
                return start

    def __enter__(self) -> "LocalCluster":
        try:
            self.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_) -> None:
        self.kill()
        shutil.rmtree(self.temp, ignore_errors=True)

    # -- nodes --------------------------------------------------------------------------------
    def start(self) -> None:
        self.start_node("head")
        for name in self.workers:
            self.start_node(name)
        self.wait_nodes(1 + len(self.workers))

    def start_node(self, name: str) -> None:
        head = name == "head"
        workers = self.port_range()
        args = [
            str(BIN / "ray"), "start", "--node-ip-address", "127.0.0.1",
            "--num-cpus", "0" if head else str(self.cpus), "--resources", json.dumps({name: 1}),
            "--object-store-memory", str(150 * 2**20),
            "--temp-dir", str(self.temp / name), "--disable-usage-stats",
            "--node-manager-port", str(self.port()), "--object-manager-port", str(self.port()),
            "--min-worker-port", str(workers), "--max-worker-port", str(workers + 39),
            "--dashboard-agent-listen-port", str(self.port()), "--dashboard-agent-grpc-port", str(self.port()),
            "--runtime-env-agent-port", str(self.port()), "--metrics-export-port", str(self.port()),
        ]
        if head:
            args += ["--head", "--port", str(self.gcs_port), "--include-dashboard", "false", "--ray-client-server-port", str(self.port())]
        else:
            args += ["--address", self.address]
        done = subprocess.run(args, env=self.env(name), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"ray start of {name}: {done.stdout[-2000:]}{done.stderr[-2000:]}"

    def env(self, node: str) -> dict[str, str]:
        # Serve's own proxy, whatever data plane the test session's Ray took: these nodes share one
        # machine, so each node's HAProxy would bind the same ports (a real cluster's nodes do not)
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("RAY_SERVE_HAPROXY_")}
        return {**inherited, **data_plane_env("proxy"), MARK: f"{self.id}:{node}", "RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token,
                "RAY_DATA_DISABLE_PROGRESS_BARS": "1", **PATIENT}

    def processes(self, node: str | None = None) -> list[psutil.Process]:
        """Every live process of this cluster (or of one node): raylets, workers, the GCS, agents, drivers."""
        want = f"{self.id}:{node}" if node else None
        found = []
        for proc in psutil.process_iter():
            try:
                mark = proc.environ().get(MARK, "")
            except (psutil.Error, OSError):
                continue
            if mark.startswith(self.id + ":") and (want is None or mark == want) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        return found

    def raylet(self, node: str) -> psutil.Process:
        (raylet,) = [p for p in self.processes(node) if p.name() == "raylet"]
        return raylet

    def kill(self, node: str | None = None) -> int:
        """SIGKILL every process of the cluster (or of one node), by pid, until none is left."""
        killed = set()
        for _ in range(20):
            procs = self.processes(node)
            if not procs:
                break
            for proc in procs:
                try:
                    proc.send_signal(signal.SIGKILL)
                    killed.add(proc.pid)
                except psutil.NoSuchProcess:
                    pass
            psutil.wait_procs(procs, timeout=5)
        return len(killed)

    def wait_nodes(self, count: int, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while (alive := len(self.nodes())) != count:
            assert time.time() < deadline, f"{alive} of {count} Ray nodes up"
            time.sleep(0.5)

    # -- a driver on the cluster -------------------------------------------------------------
    def python(self, code: str, timeout: float = 120) -> str:
        """Run `code` in a driver connected to the cluster; its stdout."""
        prelude = f"import ray, json\nray.init(address={self.address!r}, logging_level='ERROR', log_to_driver=False)\n"
        done = subprocess.run([sys.executable, "-c", prelude + code], env=self.env("driver"), capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    def nodes(self) -> dict[str, str]:
        """Live node id -> its name (the custom resource it was started with)."""
        code = "print(json.dumps({n['NodeID']: [r for r in n['Resources'] if r in %r][0] for n in ray.nodes() if n['Alive']}))"
        return json.loads(self.python(code % (("head", *self.workers),)))

    def placement(self) -> dict[str, list[str]]:
        """Node name -> the live actors there (class names: ServeReplica:<app>:<deployment>, ...)."""
        names = self.nodes()
        code = "print(json.dumps([(a['ActorClassName'], a['Address']['NodeID'], a['Name']) for a in ray._private.state.actors().values() if a['State'] == 'ALIVE']))"
        out: dict[str, list[str]] = {}
        for cls, node, name in json.loads(self.python(code)):
            out.setdefault(names.get(node, node), []).append(name or cls)
        return out

    def serve_recovered(self, since: float, lost: str, replicas: int, timeout: float = 180) -> float:
        """Seconds from `since` (a time.time()) until every deployment of the application runs
        `replicas` live replicas (RateLimits: 1) again, none of them on the lost node (by name):
        the GCS must first have seen the node die."""
        (lost_id,) = [node_id for node_id, name in self.nodes().items() if name == lost]
        code = f"""
import collections, time
from ray import serve
deadline = time.time() + {timeout}
while time.time() < deadline:
    replicas = [a for a in ray._private.state.actors().values()
                if a["State"] == "ALIVE" and (a["Name"] or "").startswith("SERVE_REPLICA::mediamatch#")]
    counts = collections.Counter(a["Name"].split("#")[1] for a in replicas)
    status = serve.status().applications.get("mediamatch")
    if (status and set(counts) == set(status.deployments) and all(d.status == "HEALTHY" for d in status.deployments.values())
            and all(n == (1 if name == "RateLimits" else {replicas}) for name, n in counts.items())
            and not any(a["Address"]["NodeID"] == {lost_id!r} for a in replicas)):
        print(time.time() - {since})
        break
    time.sleep(0.25)
"""
        out = self.python(code, timeout=timeout + 60).strip()
        assert out, "the application did not recover"
        return float(out.splitlines()[-1])

    # -- the service ---------------------------------------------------------------------------
    def serve(self, config: Path, storage: str, timeout: float = 240) -> None:
        """`mediamatch serve --address` onto the cluster, then wait until /readyz answers 200."""
        with open(self.serve_log, "a") as log:
            done = subprocess.run(
                [str(BIN / "mediamatch"), "--config", str(config), "--storage", storage, "serve", "--address", self.address, "--port", str(self.http_port)],
                env=self.env("driver"), stdout=log, stderr=subprocess.STDOUT, timeout=timeout,
            )
        assert done.returncode == 0, self.serve_log.read_text()[-3000:]
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 240) -> float:
        started = time.time()
        while True:
            try:
                if requests.get(self.url + "/readyz", timeout=5).status_code == 200:
                    return time.time() - started
            except requests.RequestException:
                pass
            assert time.time() - started < timeout, "the service on the cluster never became ready"
            time.sleep(0.5)
