"""A real Ray cluster on this machine, for the Ray executor's tests and benchmarks.

A head node (no agent slots: it holds the GCS and the dashboard the Jobs API talks to) and
worker nodes, each its own raylet on its own loopback address (127.0.0.2 for the head,
127.0.0.3... for the workers; Ray turns 127.0.0.1 into the machine's outside address, so
that one is never used). They share one temporary directory, as nodes on one machine must for
the Jobs API to find a job's log. Everything listens on loopback; `stop()` kills this cluster's
processes by pid (and runs `ray stop --force` if any outlived that), then removes its directory.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
SECRET_NAME = "KANBAN_TEST_SECRET_TOKEN"
SECRET_VALUE = "s3cret-only-on-the-workers"


def free_ports(n: int) -> list[int]:
    """N distinct free ports (all held open while chosen, so none is handed out twice)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _psutil():
    """psutil, which Ray ships in its own folder (on sys.path once ray is imported)."""
    import importlib

    import ray  # noqa: F401

    return importlib.import_module("psutil")


class Cluster:
    def __init__(self, workers: int = 2, slots: int = 8, cpus: int = 4) -> None:
        self.temp = Path(tempfile.mkdtemp(prefix="kray", dir="/tmp"))
        # every port of every node, chosen at once: distinct, and each node's named
        self._ports = iter(free_ports(3 + 6 * (workers + 1)))
        self.dashboard_port = next(self._ports)
        self.gcs_port = next(self._ports)
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        self.workers = workers
        self.slots = slots
        self.cpus = cpus
        self.ips: list[str] = []
        self.attached = False
        self.env = {**os.environ, "RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "4",
                    "RAY_health_check_initial_delay_ms": "500", "RAY_JOB_STOP_WAIT_TIME_S": "3",
                    "RAY_USAGE_STATS_ENABLED": "0"}

    @classmethod
    def attach(cls, record: Path) -> Cluster:
        """A cluster started earlier by `python tests/ray_kit.py RECORD` (for working on the tests): not stopped."""
        data = json.loads(Path(record).read_text())
        found = cls.__new__(cls)
        found.temp, found.address, found.ips = Path(data["temp"]), data["address"], list(data["ips"])
        found.env = {**os.environ}
        found.attached = True
        return found

    def record(self, path: Path) -> None:
        Path(path).write_text(json.dumps({"address": self.address, "temp": str(self.temp), "ips": self.ips}))

    def _ray(self, *args: str, env: dict | None = None, timeout: float = 120) -> None:
        done = subprocess.run([RAY, *args], env=env or self.env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"ray {args[0]} failed: {done.stdout[-2000:]}\n{done.stderr[-3000:]}")

    def common(self) -> list[str]:
        """Every port of a node named (nodes started at once would otherwise pick the same one)."""
        ports = [next(self._ports) for _ in range(6)]
        return ["--disable-usage-stats", f"--temp-dir={self.temp}", f"--dashboard-agent-listen-port={ports[0]}",
                f"--dashboard-agent-grpc-port={ports[1]}", f"--runtime-env-agent-port={ports[2]}",
                f"--metrics-export-port={ports[3]}", f"--node-manager-port={ports[4]}",
                f"--object-manager-port={ports[5]}", "--min-worker-port=0", "--max-worker-port=0"]

    def start(self) -> Cluster:
        try:
            return self._start()
        except BaseException:
            self.stop()  # a node that failed to start leaves none behind
            raise

    def _start(self) -> Cluster:
        self._ray("start", "--head", "--node-ip-address=127.0.0.2", f"--port={self.gcs_port}", "--num-cpus=1",
                  "--resources", json.dumps({"agent_slot": 0}), "--include-dashboard=true",
                  "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
                  f"--ray-client-server-port={next(self._ports)}", *self.common())
        for n in range(self.workers):  # one after the other: raylets registering at once time out here
            self.add_worker(n)
        self.wait_for_nodes(1 + self.workers)
        return self

    def add_worker(self, n: int) -> str:
        ip = f"127.0.0.{3 + n}"
        env = {**self.env, SECRET_NAME: SECRET_VALUE}
        self._ray("start", f"--address=127.0.0.2:{self.gcs_port}", f"--node-ip-address={ip}",
                  f"--num-cpus={self.cpus}", "--resources", json.dumps({"agent_slot": self.slots}), *self.common(),
                  env=env)
        self.ips.append(ip)
        return ip

    def nodes(self) -> list[dict]:
        from ray.util.state import list_nodes

        return [n.__dict__ if hasattr(n, "__dict__") else dict(n) for n in list_nodes(address=self.address)]

    def wait_for_nodes(self, count: int, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if sum(1 for n in self.nodes() if n["state"] == "ALIVE") >= count:
                    return
            except Exception:  # noqa: BLE001 - the dashboard is still starting
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the cluster did not reach {count} live nodes")

    def node_pids(self, ip: str) -> list[int]:
        """The processes of the node at IP (its raylet and what the raylet started)."""
        psutil = _psutil()

        found = []
        for proc in psutil.process_iter(["cmdline"]):
            cmd = " ".join(proc.info["cmdline"] or [])
            if str(self.temp) in cmd and (f"--node_ip_address={ip}" in cmd or f"--node-ip-address={ip}" in cmd):
                found.append(proc.pid)
        return found

    def kill_node(self, ip: str) -> None:
        """The node at IP dies at once, as a machine that lost its power: its raylet and its agents."""
        for pid in self.node_pids(ip):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if ip in self.ips:
            self.ips.remove(ip)

    def stop(self) -> None:
        """Every process of this cluster killed (found by its temporary directory), then `ray stop
        --force` if any outlived that; other clusters on the machine (another soak's) are left alone."""
        if self.attached:
            return
        psutil = _psutil()

        def mine() -> list:
            found = []
            for p in psutil.process_iter(["cmdline"]):
                try:
                    if str(self.temp) in " ".join(p.info["cmdline"] or []):
                        found.append(p)
                except psutil.Error:
                    pass
            return found

        for proc in mine():
            try:
                proc.kill()
            except psutil.Error:
                pass
        time.sleep(1.0)
        if mine():
            subprocess.run([RAY, "stop", "--force"], env=self.env, capture_output=True, timeout=120,
                           stdin=subprocess.DEVNULL)
        import shutil

        shutil.rmtree(self.temp, ignore_errors=True)

if __name__ == "__main__":  # python tests/ray_kit.py RECORD: a cluster for working on the tests
    Cluster(workers=2).start().record(Path(sys.argv[1]))
