"""A real two-node Ray cluster on this machine: `ray start --head` plus a worker node, both on loopback.

The sweep runs in its own `bnsweep run --address` process, as on a real cluster; each node is a
`ray start --block` process, so stopping one node stops exactly that node.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from bnsweep import results

RAY = str(Path(sys.executable).parent / "ray")
BNSWEEP = [sys.executable, "-m", "bnsweep.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TwoNodeCluster:
    def __init__(self, tmp: Path):
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
        port = free_port()
        self.address = f"127.0.0.1:{port}"
        self.head = self._start(["--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                                 "--include-dashboard=false", f"--temp-dir={tempfile.mkdtemp(prefix='bnsr')}"],
                                tmp / "head.log")
        self.worker = self.head
        self.wait_for_nodes(1)
        self.worker = self._start([f"--address={self.address}", "--node-ip-address=127.0.0.1"], tmp / "worker.log")
        self.wait_for_nodes(2)

    def _start(self, args: list[str], log: Path) -> subprocess.Popen:
        return subprocess.Popen([RAY, "start", "--block", "--num-cpus=1", "--disable-usage-stats", *args],
                                env=self.env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                start_new_session=True)

    def nodes(self) -> int:
        out = subprocess.run([RAY, "status", f"--address={self.address}"], env=self.env,
                             capture_output=True, text=True).stdout
        return out.split("Pending:")[0].count(" node_") if "Active:" in out else 0

    def wait_for_nodes(self, n: int, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while self.nodes() != n:
            assert time.time() < deadline and self.head.poll() is None, f"cluster did not reach {n} node(s)"
            time.sleep(1)

    def stop(self, node: subprocess.Popen) -> None:
        if node.poll() is None:
            os.killpg(node.pid, signal.SIGTERM)
            try:
                node.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)
                node.wait()

    def close(self) -> None:
        for node in (self.worker, self.head):
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)  # the node and every Ray process it started
                node.wait()


@pytest.fixture
def cluster(tmp_path):
    cluster = TwoNodeCluster(tmp_path)
    yield cluster
    cluster.close()


def sweep_file(tmp_path: Path, epochs: int, seeds: int) -> Path:
    doc = {"name": "cluster", "max_failures": 3,
           "trial": {"dataset": "planted", "n_train": 96, "n_test": 48, "model": "resnet8", "width": 0.25,
                     "batch_size": 48, "epochs": epochs, "eval_n": 24, "eval_steps": 2, "final_steps": 2,
                     "train_steps": 1, "device": "cpu"},
           "grid": {"seed": list(range(seeds))}}
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_sweep_runs_on_both_nodes_and_all_results_arrive(cluster, tmp_path):
    storage = tmp_path / "shared-storage"
    run = subprocess.run([*BNSWEEP, "run", str(sweep_file(tmp_path, 2, 4)), "--address", cluster.address,
                          "--storage", str(storage)], env=cluster.env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    df = results.load(str(storage / "cluster"))
    assert len(df) == 4 and set(df["status"]) == {"terminated"}
    assert df["final_robust_acc"].notna().all()
    assert df["node_id"].nunique() == 2  # trials ran on both nodes


def test_worker_node_stopped_mid_sweep_trials_retry_on_the_head(cluster, tmp_path):
    storage = tmp_path / "shared-storage"
    driver = subprocess.Popen([*BNSWEEP, "run", str(sweep_file(tmp_path, 6, 2)), "--address", cluster.address,
                               "--storage", str(storage)], env=cluster.env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    experiment = storage / "cluster" / "main"
    deadline = time.time() + 120
    while not any(p.stat().st_size for p in experiment.glob("*/result.json")):  # trials have started
        assert time.time() < deadline and driver.poll() is None
        time.sleep(0.5)
    cluster.stop(cluster.worker)
    out, _ = driver.communicate(timeout=400)
    assert driver.returncode == 0, out[-3000:]
    df = results.load(str(storage / "cluster"))
    assert len(df) == 2 and set(df["status"]) == {"terminated"}
    assert (df["epoch"] == 6).all() and df["final_robust_acc"].notna().all()
    assert df["num_failures"].sum() >= 1  # the trial on the stopped node failed and was retried
