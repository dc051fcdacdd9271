"""GPU scheduling without a GPU: a local Ray that declares two GPUs (`ray start --num-gpus=2`) on a
machine without CUDA. Ray hands each trial its share of a declared GPU and sets its
CUDA_VISIBLE_DEVICES; torch sees no CUDA device, so `device: auto` trains on the CPU, and every
result says so (`device_used`).

Concurrency is watched from the trials themselves (`_marked_sweep.py`: each records its start and
end), never from Ray's scheduler.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from test_cluster import RAY, free_port

from bnsweep import results
from bnsweep.errors import ConfigError
from bnsweep.results.report import devices_table
from bnsweep.sweep import driver
from bnsweep.sweep.spec import load_sweep

HERE = Path(__file__).resolve().parent
BNSWEEP = [sys.executable, "-m", "bnsweep.cli"]
GPUS, CPUS = 2, 6  # trials take cpu 0.5: 12 fit by CPU, so the GPUs decide how many run at once
TRIAL = dict(dataset="planted", n_train=32, n_test=16, model="resnet8", width=0.25, batch_size=32, epochs=1,
             eval_n=16, eval_steps=1, eval_eps_255=[8], train_steps=1, final_attack="none", device="auto")


@pytest.fixture(scope="module")
def gpu_ray(tmp_path_factory):
    """A one-node Ray declaring GPUS GPUs and CPUS CPUs, on loopback, for the whole module."""
    log = tmp_path_factory.mktemp("ray") / "head.log"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    port = free_port()
    with open(log, "w") as out:
        head = subprocess.Popen([RAY, "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
                                 f"--num-cpus={CPUS}", f"--num-gpus={GPUS}", "--include-dashboard=false",
                                 "--disable-usage-stats", f"--temp-dir={tempfile.mkdtemp(prefix='bnsg')}"],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"127.0.0.1:{port}"
    deadline = time.time() + 120
    while subprocess.run([RAY, "status", f"--address={address}"], env=env, capture_output=True).returncode:
        assert time.time() < deadline and head.poll() is None, log.read_text()[-2000:]
        time.sleep(1)
    yield address, env
    os.killpg(head.pid, signal.SIGKILL)  # the node and every Ray process it started
    head.wait()


def run_marked(tmp: Path, gpu_ray, expected: int, **settings) -> tuple[list[dict], pd.DataFrame, str]:
    """Run a one-stage sweep of tiny trials with `settings`: the trials' records, results and the
    driver's stderr."""
    address, env = gpu_ray
    sweep = tmp / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"name": "pack", "trial": TRIAL, "max_failures": 0, **settings}))
    run = subprocess.run([sys.executable, str(HERE / "_marked_sweep.py"), str(sweep), str(tmp / "results"),
                          address, str(tmp / "marks"), str(expected)],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in (tmp / "marks" / "done").iterdir()]
    return records, results.load(str(tmp / "results" / "pack")), run.stderr


def most_at_once(records: list[dict]) -> int:
    """The largest number of trials whose [start, end] overlap."""
    events = sorted([(r["start"], 1) for r in records] + [(r["end"], -1) for r in records])
    now = peak = 0
    for _, step in events:  # at equal times an end (-1) sorts first: touching intervals do not overlap
        now += step
        peak = max(peak, now)
    return peak


def test_quarter_gpus_pack_four_trials_per_gpu_each_on_its_own_device(tmp_path, gpu_ray):
    """gpu 0.25 on two GPUs: 8 trials at once, 4 per GPU; the ninth waits for a free quarter."""
    n = 4 * GPUS + 1
    records, df, stderr = run_marked(tmp_path, gpu_ray, expected=4 * GPUS, grid={"seed": list(range(n))},
                                     resources={"cpu": 0.5, "gpu": 0.25}, max_concurrent=20)
    assert len(records) == n and len(df) == n and set(df["status"]) == {"terminated"}
    assert most_at_once(records) == 4 * GPUS
    devices = {str(i) for i in range(GPUS)}
    for device in devices:
        on_it = [r for r in records if r["cuda_visible_devices"] == device]
        assert most_at_once(on_it) == 4, f"GPU {device}"
    for r in records:  # each trial sees exactly the GPU Ray gave it
        assert r["cuda_visible_devices"] in devices and r["gpu_ids"] == [r["cuda_visible_devices"]]
    # ... and its result says so, and which device really trained
    seen = df.set_index("trial_id")["cuda_visible_devices"].to_dict()
    assert seen == {r["trial_id"]: r["cuda_visible_devices"] for r in records}
    table = devices_table(df)  # the report's "Devices": trials per stage, device and CUDA_VISIBLE_DEVICES
    assert set(table["cuda_visible_devices"]) == devices and table["trials"].sum() == n
    if not torch.cuda.is_available():
        assert set(df["device_used"]) == {"cpu"}
        assert "but torch sees no CUDA device" in stderr  # a GPU node without CUDA torch is no secret


def test_max_concurrent_caps_trials_below_what_the_gpus_hold(tmp_path, gpu_ray):
    """max_concurrent 2 with room for 8: 2 at once (the smaller of the two limits wins)."""
    records, df, _ = run_marked(tmp_path, gpu_ray, expected=2, grid={"seed": list(range(4))},
                                resources={"cpu": 0.5, "gpu": 0.25}, max_concurrent=2)
    assert len(records) == 4 and set(df["status"]) == {"terminated"}
    assert most_at_once(records) == 2


def test_more_gpus_per_trial_than_a_node_has_is_refused_before_any_trial(tmp_path, gpu_ray):
    address, env = gpu_ray
    sweep = tmp_path / "big.yaml"
    sweep.write_text(yaml.safe_dump({"name": "big", "trial": TRIAL, "resources": {"cpu": 1, "gpu": GPUS + 1}}))
    run = subprocess.run([*BNSWEEP, "run", str(sweep), "--address", address, "--storage", str(tmp_path / "r")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr[-3000:]
    line = run.stderr.strip().splitlines()[-1]
    assert f"'gpu': {GPUS + 1}" in line and f"cpu {CPUS}, gpu {GPUS}" in line and "wait for ever" in line
    assert not (tmp_path / "r" / "big" / "sweep.yaml").exists()  # no experiment began
    assert not list((tmp_path / "r").rglob("result.json"))


@pytest.mark.parametrize("nodes, resources, fits", [
    ([(4, 1)], {"cpu": 4, "gpu": 1}, True),
    ([(4, 1)], {"cpu": 4, "gpu": 0.25}, True),
    ([(4, 1)], {"cpu": 5, "gpu": 0.25}, False),
    ([(8, 0), (2, 1)], {"cpu": 4, "gpu": 1}, False),  # enough CPUs and a GPU, but on different nodes
    ([(8, 0), (4, 2)], {"cpu": 4, "gpu": 2}, True),
    ([(8, 0), (4, 2)], {"cpu": 1, "gpu": 3}, False),
    ([(8, 0), (8, 0)], {"cpu": 2, "gpu": 4}, True),  # no GPU anywhere: runs on CPU, with a warning
])
def test_a_trial_must_fit_on_one_node(tmp_path, monkeypatch, capsys, nodes, resources, fits):
    import ray

    alive = [{"Alive": True, "Resources": {"CPU": cpu, **({"GPU": gpu} if gpu else {})}} for cpu, gpu in nodes]
    dead = {"Alive": False, "Resources": {"CPU": 64, "GPU": 8}}  # a node that left counts for nothing
    monkeypatch.setattr(ray, "nodes", lambda: [*alive, dead])
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": sum(c for c, _ in nodes),
                                                           "GPU": sum(g for _, g in nodes)})
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "trial": TRIAL, "resources": resources}))
    sweep = load_sweep(str(path))
    if fits:
        driver.check_resources(sweep, list(sweep.stages))
        gpus = any(g for _, g in nodes)
        assert ("cluster has no GPU; running on CPU" in capsys.readouterr().err) == (not gpus)
        assert driver.trial_resources(sweep.stages[0])["gpu"] == (resources["gpu"] if gpus else 0)
    else:
        with pytest.raises(ConfigError, match="one node of the Ray cluster holds"):
            driver.check_resources(sweep, list(sweep.stages))
