"""Faults survived: a killed trial process, a killed driver, a diverging trial, two drivers at once."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from bnsweep import results
from bnsweep.core.config import make_config
from bnsweep.core.train import fit
from bnsweep.layout.paths import sweep_dir
from bnsweep.sweep.driver import SweepFailed, execute
from bnsweep.sweep.spec import load_sweep

TRIAL = dict(dataset="planted", n_train=480, n_test=48, model="resnet8", width=0.25, batch_size=48, eval_n=24,
             eval_steps=2, eval_eps_255=[8], final_steps=3, train_steps=2, train_step_255=4, device="cpu")
BNSWEEP = [sys.executable, "-m", "bnsweep.cli"]


def write(tmp: Path, doc: dict) -> Path:
    path = tmp / f"{doc['name']}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def rows(trial_dir: str) -> list[dict]:
    path = os.path.join(trial_dir, "result.json")
    if not os.path.exists(path):
        return []
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def trial_dirs(root: Path) -> list[str]:
    return sorted(str(p.parent) for p in root.glob("*/*/result.json"))


def test_trial_process_killed_mid_epoch_resumes_and_matches_a_clean_run(tmp_path, ray_local):
    """SIGKILL the trial's worker in epoch 3: it restarts from the epoch-2 checkpoint, reports every
    epoch once, and ends with exactly the metrics of the same trial run without the fault."""
    doc = {"name": "killed", "trial": {**TRIAL, "epochs": 4}, "max_failures": 2}
    sweep = load_sweep(str(write(tmp_path, doc)))
    root = sweep_dir(str(tmp_path / "results"), "killed")

    import threading

    def kill_in_epoch_3():
        wait_for(lambda: trial_dirs(Path(root)) and len(rows(trial_dirs(Path(root))[0])) >= 2, 300, "epoch 2")
        time.sleep(0.3)  # inside epoch 3
        os.kill(rows(trial_dirs(Path(root))[0])[-1]["pid"], signal.SIGKILL)

    killer = threading.Thread(target=kill_in_epoch_3)
    killer.start()
    execute(sweep, root, resume=False)
    killer.join()
    df = results.load(root)
    assert list(df["status"]) == ["terminated"] and int(df["num_failures"][0]) == 1
    history = rows(df["trial_dir"][0])
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]

    torch.set_num_threads(1)  # as in the Ray trial (1 CPU), so the arithmetic is the same
    try:
        clean = fit(make_config(sweep.stages[0].base), lambda metrics, checkpoint: None)
    finally:
        torch.set_num_threads(os.cpu_count() or 1)
    for key in ("train_loss", "clean_acc", "robust_acc", "final_clean_acc", "final_robust_acc"):
        assert history[-1][key] == clean[key], key


def test_diverging_trial_stops_with_its_reason_and_others_go_on(tmp_path, ray_local):
    doc = {"name": "diverge", "trial": {**TRIAL, "n_train": 96, "epochs": 2}, "grid": {"lr": [0.05, 1000]}}
    sweep = load_sweep(str(write(tmp_path, doc)))
    root = sweep_dir(str(tmp_path / "results"), "diverge")
    execute(sweep, root, resume=False)
    df = results.load(root).set_index("lr")
    assert df.loc[1000, "status"] == "diverged" and "not finite" in df.loc[1000, "error"]
    assert df.loc[1000, "epoch"] == 1  # stopped at once, no garbage epochs after it
    assert df.loc[0.05, "status"] == "terminated" and df.loc[0.05, "epoch"] == 2


def kill_with_one_trial_finished(tmp_path: Path, name: str, watch=lambda: True) -> tuple[Path, dict, dict]:
    """`bnsweep run` of three seeds, two at a time, SIGKILLed with its local Ray once one trial has
    finished and the third has started; `watch` is polled until it holds first (to copy a file of an
    early save). Returns the experiment, the rows of the finished trials, and the environment."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    doc = {"name": name, "trial": {**TRIAL, "epochs": 3}, "grid": {"seed": [0, 1, 2]}, "max_concurrent": 2}
    path = write(tmp_path, doc)
    storage = tmp_path / "results"
    root = storage / name
    driver = subprocess.Popen([*BNSWEEP, "run", str(path), "--storage", str(storage)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for(watch, 300, "an early save")
    finished = lambda: [d for d in trial_dirs(root) if len(rows(d)) == 3]  # noqa: E731
    wait_for(lambda: finished() and len(trial_dirs(root)) == 3, 400, "one finished trial while others run")
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local Ray it started
    driver.wait()
    # a second driver while the first is gone is allowed only through resume
    again = subprocess.run([*BNSWEEP, "run", str(path), "--storage", str(storage)], env=env,
                           capture_output=True, text=True)
    assert again.returncode == 2 and "bnsweep resume" in again.stderr
    return root, {d: rows(d) for d in finished()}, env


def resume_all_three(root: Path, env: dict):
    """`bnsweep resume` of that experiment: it finishes every trial, each epoch in result.json once."""
    resumed = subprocess.run([*BNSWEEP, "resume", str(root)], env=env, capture_output=True, text=True,
                             timeout=500)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    df = results.load(str(root))
    assert sorted(df["seed"]) == [0, 1, 2] and set(df["status"]) == {"terminated"}
    for d in df["trial_dir"]:
        assert [r["epoch"] for r in rows(d)] == [1, 2, 3]  # every epoch once, none lost
    return df


def test_driver_killed_then_resume_finishes_without_rerunning_or_duplicates(tmp_path):
    """`bnsweep run` is SIGKILLed while trials run; `bnsweep resume` finishes the experiment."""
    root, done_before, env = kill_with_one_trial_finished(tmp_path, "driver")
    resume_all_three(root, env)
    for d, before in done_before.items():
        assert rows(d) == before  # finished trials were not rerun


def test_resume_after_a_kill_that_left_the_search_state_older_than_the_snapshot(tmp_path):
    """Ray copies the stage's snapshot (its trials) and its search algorithm's state to the storage as
    two files, one after the other: a driver killed in between leaves the search state of an earlier
    save. Here it is the first save's, which counts trials 0 and 1 as running and has made 2 of 3,
    while the snapshot has all three, one or two of them finished. Restored as Ray restores it, the
    search would wait for ever on a finished trial (a CI run hung so) or make trial 2 again;
    bnsweep's searcher takes the snapshot as the truth (sweep/searchers.py)."""
    first: dict[str, bytes] = {}

    def first_search_state() -> bool:
        for file in (tmp_path / "results" / "older" / "main").glob("basic-variant-state-*.json"):
            data = file.read_bytes()
            first.update({file.name: data} if data else {})  # Ray rewrites it in place: not mid-write
        return bool(first)

    root, done_before, env = kill_with_one_trial_finished(tmp_path, "older", first_search_state)
    (name, data), = first.items()
    (root / "main" / name).write_bytes(data)  # the search state an earlier copy left
    resume_all_three(root, env)
    assert len(trial_dirs(root)) == 3  # trial 2 was not made again
    for d, before in done_before.items():
        assert rows(d) == before


def test_resume_after_a_kill_that_left_the_snapshot_older_than_the_search_state(tmp_path):
    """The other way round: the trial snapshot of the first save (trials 0 and 1) beside the search
    state of the last (all three made). Restored as Ray restores it, trial 2 is in no list and never
    runs again, and the stage counts as finished without it; bnsweep's searcher makes it again, and
    `results` shows that run of it, not the directory the lost run left. The snapshot knows no
    checkpoint of the trial that had finished, so Ray starts it afresh: it trains again (sweep/trial.py)."""
    first: dict[str, str] = {}

    def first_snapshot() -> bool:
        for file in (tmp_path / "results" / "newer" / "main").glob("experiment_state-*.json"):
            text = file.read_text()
            with contextlib.suppress(ValueError):  # Ray rewrites it in place: not mid-write
                first.update({file.name: text} if json.loads(text)["trial_data"] else {})
        return bool(first)

    root, done_before, env = kill_with_one_trial_finished(tmp_path, "newer", first_snapshot)
    (name, text), = first.items()
    assert len(json.loads(text)["trial_data"]) == 2  # made before trial 2 was
    (root / "main" / name).write_text(text)  # the snapshot an earlier copy left
    resume_all_three(root, env)
    numbers = lambda trial_rows: [(r["epoch"], r["train_loss"], r["robust_acc"]) for r in trial_rows]  # noqa: E731
    for d, before in done_before.items():  # the snapshot knew no checkpoint of it: trained again, to the same numbers
        assert numbers(rows(d)) == numbers(before)


def test_second_driver_on_a_running_experiment_refuses(tmp_path):
    """While a driver runs an experiment, a second one (and one naming it as a URI) is refused, and the
    first runs on undisturbed. The first's trial is long (it would run for minutes), so it still runs
    when the refusals come, however loaded the machine; then it gets Ctrl-C's SIGINT and stops."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    doc = {"name": "busy", "trial": {**TRIAL, "epochs": 200}}
    path = write(tmp_path, doc)
    storage = tmp_path / "results"
    first = subprocess.Popen([*BNSWEEP, "run", str(path), "--storage", str(storage)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: (storage / "busy" / "sweep.yaml").exists(), 120, "the first driver to start")
        second = subprocess.run([*BNSWEEP, "run", str(path), "--storage", str(storage), "--resume"], env=env,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert "no other bnsweep driver" in second.stderr and len(second.stderr.strip().splitlines()) == 1
        uri = subprocess.run([*BNSWEEP, "resume", f"file://{storage}/busy"], env=env, capture_output=True,
                             text=True, timeout=120)  # the same experiment spelled as a URI
        assert uri.returncode == 2 and "no other bnsweep driver" in uri.stderr
        assert first.poll() is None  # still running its trial
        os.killpg(first.pid, signal.SIGINT)
        assert first.wait(timeout=120) == 130  # interrupted as Ctrl-C interrupts it: resumable
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)


def interrupting_trial(config, **kwargs):
    """A stand-in trial (one checkpoint per epoch, no training) that sends the driver Ctrl-C's SIGINT
    after its first epoch, once in the whole test."""
    import tempfile

    from ray import tune

    checkpoint = tune.get_checkpoint()
    start = 1
    if checkpoint:
        with checkpoint.as_directory() as directory:
            start = int(Path(directory, "epoch").read_text()) + 1
    marker = Path(config["data_dir"], "interrupted")
    for epoch in range(start, config["epochs"] + 1):
        with tempfile.TemporaryDirectory() as directory:
            Path(directory, "epoch").write_text(str(epoch))
            tune.report({"epoch": epoch, "robust_acc": 0.5}, checkpoint=tune.Checkpoint.from_directory(directory))
        if not marker.exists():
            marker.touch()
            os.kill(int(Path(config["data_dir"], "driver.pid").read_text()), signal.SIGINT)
            time.sleep(5)  # still running when Ray stops the stage (it stops at once)


def test_stage_stopped_by_sigint_is_not_finished_and_resume_completes_it(tmp_path, ray_local):
    """Ray Tune catches SIGINT and returns from fit normally: the stage must still count as
    unfinished (SweepInterrupted), and resume must finish its trials from their checkpoints."""
    import ray.cloudpickle

    from bnsweep.sweep.driver import SweepInterrupted

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    (tmp_path / "driver.pid").write_text(str(os.getpid()))
    doc = {"name": "sigint", "trial": {**TRIAL, "n_train": 96, "epochs": 2, "data_dir": str(tmp_path)},
           "max_failures": 0,
           "stages": [{"name": "pre"}, {"name": "adv", "trial": {"init": {"from_stage": "pre"}}}]}
    sweep = load_sweep(str(write(tmp_path, doc)))
    root = sweep_dir(str(tmp_path / "results"), "sigint")
    with pytest.raises(SweepInterrupted, match="stage 'pre'.*bnsweep resume"):
        execute(sweep, root, resume=False, trainable=interrupting_trial)
    state = json.loads(Path(root, "bnsweep_state.json").read_text())
    assert "pre" not in state["stages"] and not Path(root, "adv").exists()  # not finished, nothing built on it
    execute(sweep, root, resume=True, trainable=interrupting_trial)
    df = results.load(root)
    assert list(df["stage"]) == ["pre", "adv"] and set(df["status"]) == {"terminated"}
    for trial_dir in df["trial_dir"]:
        assert [r["epoch"] for r in rows(trial_dir)] == [1, 2]  # every epoch once


def test_ctrl_c_in_a_terminal_exits_130_and_resume_finishes_every_epoch(tmp_path):
    """SIGINT to the driver's whole process group, as a terminal sends Ctrl-C (Ray's processes get it too)."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    doc = {"name": "ctrlc", "trial": {**TRIAL, "epochs": 4}, "grid": {"seed": [0, 1]}}
    path = write(tmp_path, doc)
    storage = tmp_path / "results"
    root = storage / "ctrlc"
    with open(tmp_path / "driver.err", "w") as err:
        driver = subprocess.Popen([*BNSWEEP, "run", str(path), "--storage", str(storage)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        try:
            wait_for(lambda: any(rows(d) for d in trial_dirs(root)), 400, "the first epoch")
            os.killpg(driver.pid, signal.SIGINT)
            assert driver.wait(timeout=300) == 130
        finally:
            if driver.poll() is None:
                os.killpg(driver.pid, signal.SIGKILL)
    last = (tmp_path / "driver.err").read_text().strip().splitlines()[-1]
    assert last.startswith("bnsweep: interrupted") and f"bnsweep resume {root}" in last
    assert "main" not in json.loads((root / "bnsweep_state.json").read_text())["stages"]
    assert any(len(rows(d)) < 4 for d in trial_dirs(root))
    resumed = subprocess.run([*BNSWEEP, "resume", str(root)], env=env, capture_output=True, text=True, timeout=500)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    df = results.load(str(root))
    assert len(df) == 2 and set(df["status"]) == {"terminated"}
    for d in df["trial_dir"]:
        assert [r["epoch"] for r in rows(d)] == [1, 2, 3, 4]  # every epoch once, none lost
    assert json.loads((root / "bnsweep_state.json").read_text())["stages"]["main"]["finished"]


def test_local_ray_starts_without_dashboard(ray_local):
    from ray._private.worker import global_worker

    assert not global_worker.node.address_info.get("webui_url")


def test_full_storage_stops_with_a_clear_error_and_keeps_results(tmp_path, small_tmpfs, ray_local):
    small_disk = small_tmpfs("1500k")  # 1.5 MiB of storage
    doc = {"name": "full", "trial": {**TRIAL, "n_train": 96, "width": 0.5, "epochs": 8}, "grid": {"seed": [0, 1]},
           "max_failures": 0, "checkpoints_to_keep": 20}  # every checkpoint kept: the disk fills up
    sweep = load_sweep(str(write(tmp_path, doc)))
    root = sweep_dir(str(small_disk), "full")
    with pytest.raises(SweepFailed) as failed:
        execute(sweep, root, resume=False)
    assert f"storage {root}" in str(failed.value) and "MiB free" in str(failed.value)
    df = results.load(root)
    assert len(df) == 2 and set(df["status"]) == {"error"}
    from bnsweep.core import checkpoints

    reported = 0
    for trial_dir, checkpoint in zip(df["trial_dir"], df["checkpoint"]):
        history = rows(trial_dir)
        # A trial that starts late can find the disk already full before its first report: it has
        # nothing to lose. Every other keeps each epoch it reported, and its last checkpoint is whole.
        assert [r["epoch"] for r in history] == list(range(1, len(history) + 1))
        assert pd.isna(checkpoint) == (not history)
        if history:
            reported += 1
            assert checkpoints.load(checkpoint)["epoch"] == len(history)
    assert reported >= 1


# -- stop signals, and the race between a report and its checkpoint ------------------------------
# The fault hook (bnsweep.sweep.faults) sends the signal right after the line of epoch 2 reached
# result.json and before Ray registered its checkpoint: the moment at which Ctrl-C or kill -9 made a
# resumed trial report an epoch twice. Each test asserts that the moment was hit.

RACE_TRIAL = {**TRIAL, "n_train": 96, "epochs": 3}


def registered_epoch(stage_dir: Path) -> int:
    """The epoch of the checkpoint Ray's newest experiment state has registered for the one trial."""
    import pickle

    state = json.loads(max(stage_dir.glob("experiment_state-*.json")).read_text())
    (_, runtime_json), = state["trial_data"]
    manager = pickle.loads(bytes.fromhex(json.loads(runtime_json)["checkpoint_manager"]["value"]))
    return manager.latest_checkpoint_result.metrics["epoch"]


def check_interrupted_at_the_race(root: Path) -> None:
    (trial_dir,) = trial_dirs(root)
    assert [r["epoch"] for r in rows(trial_dir)] == [1, 2]
    assert registered_epoch(root / "main") == 1  # the race: epoch 2's line is written, its checkpoint not known
    assert "main" not in json.loads((root / "bnsweep_state.json").read_text())["stages"]


def check_resumed_every_epoch_once(root: Path, capsys) -> None:
    from bnsweep.cli import main

    assert main(["resume", str(root)]) == 0, capsys.readouterr().err[-3000:]
    (trial_dir,) = trial_dirs(root)
    assert [(r["epoch"], r["training_iteration"]) for r in rows(trial_dir)] == [(1, 1), (2, 2), (3, 3)]
    assert json.loads((root / "bnsweep_state.json").read_text())["stages"]["main"]["finished"]
    from bnsweep.core import checkpoints

    assert checkpoints.load(results.load(str(root))["checkpoint"][0])["epoch"] == 3  # the newest is the last epoch's


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_stop_signal_to_the_driver_saves_and_resume_reports_every_epoch_once(sig, tmp_path, ray_local, capsys,
                                                                              monkeypatch):
    """In this process (Ray already up): SIGINT is Ctrl-C, SIGHUP a closing terminal."""
    from bnsweep.cli import main
    from bnsweep.sweep import faults

    path = write(tmp_path, {"name": "race", "trial": RACE_TRIAL})
    root = tmp_path / "results" / "race"
    monkeypatch.setenv(faults.ENV, f"2:{sig.name}:driver")
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    assert main(["run", str(path), "--storage", str(tmp_path / "results")]) == 128 + sig
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"bnsweep: interrupted ({sig.name})") and last.endswith(f"bnsweep resume {root}")
    assert {s: signal.getsignal(s) for s in before} == before  # the driver's handlers are gone again
    check_interrupted_at_the_race(root)
    monkeypatch.delenv(faults.ENV)
    check_resumed_every_epoch_once(root, capsys)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_signal_to_the_driver_process_group_then_resume(sig, tmp_path, ray_local, capsys):
    """`bnsweep run` in its own process group with its own local Ray; the whole group gets the signal,
    as SLURM (SIGTERM) or `kill -9` deliver it. SIGTERM: Ray's processes outlive it, the driver saves
    and exits 143 with the resume command. SIGKILL: everything dies; the state on the storage is the
    one saved after epoch 2's line was written, before its checkpoint was registered."""
    from bnsweep.sweep import faults

    path = write(tmp_path, {"name": "race", "trial": RACE_TRIAL})
    root = tmp_path / "results" / "race"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", faults.ENV: f"2:{sig.name}:group"}
    driver = subprocess.run([*BNSWEEP, "run", str(path), "--storage", str(tmp_path / "results")], env=env,
                            capture_output=True, text=True, timeout=600, start_new_session=True)
    assert driver.returncode == (128 + sig if sig == signal.SIGTERM else -sig), driver.stderr[-3000:]
    if sig == signal.SIGTERM:
        assert "Traceback" not in driver.stderr and "SIGTERM received" not in driver.stderr  # no C++ stack dump
        last = driver.stderr.strip().splitlines()[-1]
        assert last.startswith("bnsweep: interrupted (SIGTERM)") and last.endswith(f"bnsweep resume {root}")
    check_interrupted_at_the_race(root)
    check_resumed_every_epoch_once(root, capsys)


def test_driver_killed_before_any_checkpoint_was_registered_then_resume(tmp_path, capsys):
    """The race at epoch 1: its line is on the storage, Ray knows no checkpoint of the trial. Ray then
    starts the trial afresh with an empty result.json of its own, which replaces the storage's, so the
    trial must report epoch 1 again (not skip it as a line already there) or epoch 1 is lost."""
    from bnsweep.sweep import faults

    path = write(tmp_path, {"name": "race", "trial": RACE_TRIAL})
    root = tmp_path / "results" / "race"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", faults.ENV: "1:SIGKILL:group"}
    driver = subprocess.run([*BNSWEEP, "run", str(path), "--storage", str(tmp_path / "results")], env=env,
                            capture_output=True, text=True, timeout=600, start_new_session=True)
    assert driver.returncode == -signal.SIGKILL, driver.stderr[-3000:]
    (trial_dir,) = trial_dirs(root)
    assert [r["epoch"] for r in rows(trial_dir)] == [1]
    check_resumed_every_epoch_once(root, capsys)


def test_no_process_of_the_local_ray_outlives_the_command(tmp_path):
    """The local Ray a run starts has SIGTERM blocked (so a signal to the group cannot kill it before
    the driver saved); at exit the driver stops it with SIGKILL (signals.stop_ray_at_once). Nothing
    of it may be left running: no raylet, GCS, agent or trial worker of its session."""
    import tempfile

    path = write(tmp_path, {"name": "exits", "trial": {**TRIAL, "n_train": 96, "epochs": 1}})
    ray_tmp = tempfile.mkdtemp(prefix="bnsweep-ray-", dir="/tmp")  # short: Ray's socket paths live under it
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": ray_tmp}
    done = subprocess.run([*BNSWEEP, "run", str(path), "--storage", str(tmp_path / "results")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    def session_processes() -> list[str]:
        found = []  # by environment: Ray's workers rename themselves (ray::IDLE), but inherit RAY_TMPDIR
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                if f"RAY_TMPDIR={ray_tmp}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                    found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:200])
            except OSError:  # gone meanwhile, or not ours to read
                continue
        return found

    assert os.listdir(ray_tmp), "Ray did not use RAY_TMPDIR, so this test would see nothing"
    wait_for(lambda: not session_processes(), 30, f"the local Ray's processes to end: {session_processes()}")
