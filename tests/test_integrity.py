"""Integrity of experiments against careless and hostile input: exceptions that survive Ray,
`--where` that cannot run code, names that stay inside the storage, one driver per experiment
however it is spelled, untrusted directories refused, damaged directories skipped or refused."""

from __future__ import annotations

import pickle
import sys

import pytest

from bnsweep import errors
from bnsweep.errors import BadInput, ConfigError
from bnsweep.files import UnreadableFile
from bnsweep.layout.tune import SnapshotUnreadable


def subclasses(cls: type) -> list[type]:
    return [cls] + [s for sub in cls.__subclasses__() for s in subclasses(sub)]


BAD_INPUTS = [ConfigError("init", {"from_stage": "pre"}, "an earlier stage", "s.yaml: stage 'adv'"),
              *(cls("a message naming what to fix") for cls in subclasses(BadInput) if cls is not ConfigError)]


BAD_INPUTS_TYPES = [type(e) for e in BAD_INPUTS]


@pytest.mark.parametrize("err", BAD_INPUTS, ids=lambda e: type(e).__name__)
def test_bad_input_errors_pickle_by_value(err):
    import ray.cloudpickle

    for module in (pickle, ray.cloudpickle):
        back = module.loads(module.dumps(err))
        assert type(back) is type(err) and str(back) == str(err) and back.__dict__ == err.__dict__
    if isinstance(err, ConfigError):
        assert (back.key, back.value, back.allowed) == ("init", {"from_stage": "pre"}, "an earlier stage")


def test_every_bad_input_class_is_covered():
    """BAD_INPUTS was built from the BadInput subclasses imported when this file was collected; every
    one defined anywhere in bnsweep (each module imported now) must be among them."""
    import importlib
    import pkgutil

    import bnsweep

    for module in pkgutil.walk_packages(bnsweep.__path__, "bnsweep."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    assert set(subclasses(BadInput)) <= {type(e) for e in BAD_INPUTS}
    assert {errors.ConfigError, errors.DataError, errors.UsageError, errors.NoExperimentError, UnreadableFile,
            SnapshotUnreadable} <= set(BAD_INPUTS_TYPES)


def config_error_trial(config, **kwargs):
    raise ConfigError("init", "/ckpt/other.pt", "a checkpoint of resnet8 (width 0.25)", "trial")


def test_config_error_inside_a_ray_trial_reaches_the_driver_intact(tmp_path, ray_local):
    import ray.cloudpickle

    from bnsweep import results
    from bnsweep.sweep.driver import SweepFailed, execute
    from bnsweep.sweep.spec import parse_sweep

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    sweep = parse_sweep("name: raises\ntrial: {dataset: planted, model: resnet8, epochs: 1}\nmax_failures: 0\n",
                        "raises.yaml")
    root = str(tmp_path / "raises")
    message = "trial: init: '/ckpt/other.pt' is not allowed; allowed: a checkpoint of resnet8 (width 0.25)"
    with pytest.raises(SweepFailed) as failed:
        execute(sweep, root, resume=False, trainable=config_error_trial)
    assert f"ConfigError: {message}" in str(failed.value)
    assert results.load(root)["error"].tolist() == [f"bnsweep.errors.ConfigError: {message}"]


# -- --where cannot run code -------------------------------------------------------------------

INJECTIONS = [
    "@os.system('touch x')",
    "@df.to_csv('x')",
    "__import__('os').system('touch x')",
    "df.to_csv('x')",
    "stage.to_csv('x') == 1",
    "`stage`.to_csv('x') == 1",
    "stage.str.len() > 0",
    "stage.__class__ == 1",
    "open('x', 'w')",
    "(lambda: open('x', 'w'))()",
    "seed[0] == 1",
    "[open('x', 'w') for s in [1]]",
    "(x := 1) == 1",
    "f'{seed}' == '1'",
    "seed if seed else seed",
    "__builtins__ == 1",
    "seed == 1; import os",
    "seed in seed",
    "stage * 100000000000 == 'a'",
    "2 ** 10 ** 10 == 1",
    "seed is None",
    "stage == b'x'",
    "{'a': 1} == 1",
    "not " * 20000 + "seed == 1",
    "`stage",
    "trainable < 1",
    "seed",
]


@pytest.mark.parametrize("where", INJECTIONS, ids=range(len(INJECTIONS)))
@pytest.mark.parametrize("command", ["results", "table"])
def test_where_runs_nothing_and_reaches_nothing_but_columns(where, command, mixed_dir, tmp_path, monkeypatch, capsys):
    from bnsweep.cli import main

    monkeypatch.chdir(tmp_path)
    assert main([command, str(mixed_dir), "--where", where]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bnsweep: error: --where") and len(err.strip().splitlines()) == 1
    assert len(err) < 3000  # the expression is cut short, not echoed whole
    assert list(tmp_path.iterdir()) == []  # nothing written, nothing run


LEGITIMATE = [
    "stage == 'adv' and trainable in ['bn', 'all']",
    "robust_acc > 0.3",
    "not (seed == 1)",
    "seed not in (1, 2) or status == 'error'",
    "0.2 < robust_acc <= 0.9",
    "`robust_acc_eps8` >= robust_acc - 0.1",
    "seed % 2 == 0 and -seed > -4",
    "epochs * 2 == 6 and status != 'terminated'",
    "stage == \"a`b\" or stage == 'pre'",
]


@pytest.mark.parametrize("where", LEGITIMATE)
def test_where_selects_what_pandas_query_selects(where, mixed_dir):
    from bnsweep import results

    df = results.load(mixed_dir)
    selected = results.select(df, where)
    assert 0 < len(selected) < len(df) or where.startswith("robust_acc")
    assert selected["trial_id"].tolist() == df.query(where)["trial_id"].tolist()


# -- names stay inside the storage -------------------------------------------------------------

BAD_NAMES = ["../../x", "..", ".", "my sweep/x", "a/b", "/abs", "", "-x", "x\n", "sweep\x00"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=range(len(BAD_NAMES)))
@pytest.mark.parametrize("given_by", ["--name", "name:"])
def test_experiment_name_is_one_directory_inside_the_storage(name, given_by, tmp_path, monkeypatch, capsys):
    import json

    from bnsweep.cli import main
    from bnsweep.sweep import driver

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray must not start for a bad name")

    monkeypatch.setattr(driver, "connect", no_ray)
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    sweep = work / "s.yaml"
    head = "" if given_by == "--name" else f"name: {json.dumps(name)}\n"
    sweep.write_text(head + "trial: {dataset: planted, model: resnet8, epochs: 1}\n")
    extra = [f"--name={name}"] if given_by == "--name" else []
    assert main(["run", str(sweep), "--storage", str(work / "storage"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and ("--name" if given_by == "--name" else "name") in err
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["a", "a/b", "a/b/s.yaml"]


# -- one driver per experiment, however it is spelled ------------------------------------------

@pytest.fixture
def held_experiment(tmp_path):
    """An experiment directory whose driver lock another process holds (as a running driver does)."""
    import subprocess

    root = tmp_path / "storage" / "exp"
    root.mkdir(parents=True)
    (root / "sweep.yaml").write_text("name: exp\ntrial: {dataset: planted, model: resnet8, epochs: 1}\n")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom bnsweep.sweep.lock import driver_lock\n"
         "with driver_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(300)", str(root)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        yield root
    finally:
        holder.kill()
        holder.wait()


def spellings(root) -> list[str]:
    link = root.parent.parent / "link"
    link.symlink_to(root.parent)
    return [f"file://{root}", f"file:{root}", str(link / "exp"), f"{root}/../exp", f"file://{link}/exp/"]


def test_other_spellings_of_a_running_experiment_are_refused(held_experiment, monkeypatch, capsys):
    from bnsweep.cli import main
    from bnsweep.sweep import driver

    def no_ray(*args, **kwargs):
        raise AssertionError("a second driver must not start Ray")

    monkeypatch.setattr(driver, "connect", no_ray)
    for spelling in spellings(held_experiment):
        assert main(["resume", spelling]) == 2, spelling
        err = capsys.readouterr().err.strip()
        assert "no other bnsweep driver" in err and len(err.splitlines()) == 1, (spelling, err)
    storage = f"file://{held_experiment.parent}"
    assert main(["run", str(held_experiment / "sweep.yaml"), "--storage", storage, "--resume"]) == 2
    assert "no other bnsweep driver" in capsys.readouterr().err


@pytest.fixture
def fast_heartbeat(monkeypatch):
    from bnsweep.sweep import lock as storage

    monkeypatch.setattr(storage, "SETTLE_S", 0.0)
    monkeypatch.setattr(storage, "HEARTBEAT_S", 0.05)
    return storage


def lock_file(tmp_path, **held):
    import json

    path = tmp_path / "lock.json"
    path.write_text(held.pop("text", None) or json.dumps(held))
    return path


def test_uri_lock_refuses_a_live_driver_and_takes_over_a_dead_ones(tmp_path, fast_heartbeat, capsys):
    import json
    import subprocess
    import time

    import pyarrow.fs as pafs

    storage, fs = fast_heartbeat, pafs.LocalFileSystem()
    live = lock_file(tmp_path, host="other-host", pid=1, token="t", heartbeat=time.time() - 5)
    with pytest.raises(ConfigError, match="no other bnsweep driver is running .driver pid 1 on other-host"):
        with storage.heartbeat_lock(fs, str(live), "s3://b/exp"):
            pass
    assert json.loads(live.read_text())["token"] == "t"  # untouched

    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = [dict(host="other-host", pid=1, token="t", heartbeat=time.time() - storage.STALE_S - 1),
            dict(host=__import__("socket").gethostname(), pid=gone.pid, token="t", heartbeat=time.time()),
            dict(text="{half a lock")]
    for held in dead:
        path = lock_file(tmp_path, **held)
        with storage.heartbeat_lock(fs, str(path), "s3://b/exp"):
            assert "taking over from driver" in capsys.readouterr().err
            mine = json.loads(path.read_text())
            assert mine["pid"] == __import__("os").getpid() and mine["token"] != "t"
        assert not path.exists()  # released


def test_uri_lock_heartbeat_is_refreshed_while_held(tmp_path, fast_heartbeat):
    import json
    import time

    import pyarrow.fs as pafs

    path = tmp_path / "lock.json"
    with fast_heartbeat.heartbeat_lock(pafs.LocalFileSystem(), str(path), "s3://b/exp"):
        first = json.loads(path.read_text())["heartbeat"]
        deadline = time.time() + 30
        while json.loads(path.read_text())["heartbeat"] == first:  # written whole (a move), never half
            assert time.time() < deadline, "heartbeat never refreshed"
            time.sleep(0.02)


def test_second_driver_through_a_uri_is_refused(tmp_path, fast_heartbeat, monkeypatch):
    import pyarrow.fs as pafs

    storage = fast_heartbeat
    local = pafs.LocalFileSystem()
    monkeypatch.setattr(storage, "filesystem", lambda uri: (local, str(tmp_path / uri.split("://")[1]), "s3://"))
    with storage.driver_lock("s3://bucket/exp"):
        assert (tmp_path / "bucket" / "exp" / storage.HEARTBEAT_FILE).exists()
        with pytest.raises(ConfigError, match="no other bnsweep driver"):
            with storage.driver_lock("s3://bucket/exp"):
                pass
    with storage.driver_lock("s3://bucket/exp"):  # released: the next driver takes it
        pass


# -- resume unpickles only directories no one else can write -----------------------------------

class Planted:
    """A pickle that runs code when loaded: what a crafted tuner.pkl would hold."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def planted_experiment(tmp_path):
    root = tmp_path / "exp"
    (root / "main" / "trial_0").mkdir(parents=True)
    (root / "sweep.yaml").write_text("name: exp\ntrial: {dataset: planted, model: resnet8, epochs: 1}\n")
    (root / "main" / "tuner.pkl").write_bytes(pickle.dumps(Planted(tmp_path / "pwned")))
    (root / "main" / "trial_0" / "params.json").write_text("{}")
    return root


def make_untrusted(root, how: str) -> None:
    import os

    if how == "o+w file":
        os.chmod(root / "main" / "tuner.pkl", 0o646)
    elif how == "o+w trial dir":
        os.chmod(root / "main" / "trial_0", 0o757)
    elif how == "o+w experiment":
        os.chmod(root, 0o777)
    elif how == "symlink":
        (root / "main" / "link.pkl").symlink_to(root / "main" / "tuner.pkl")
    elif how == "foreign owner":
        if os.getuid() != 0:
            pytest.skip("chown to another user needs root")
        os.chown(root / "main" / "tuner.pkl", 65534, 65534)


@pytest.mark.parametrize("how", ["o+w file", "o+w trial dir", "o+w experiment", "symlink", "foreign owner"])
def test_resume_refuses_a_directory_others_could_plant_pickles_in(how, tmp_path, monkeypatch, capsys):
    from bnsweep.cli import main
    from bnsweep.sweep import driver

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray must not start on an untrusted experiment")

    monkeypatch.setattr(driver, "connect", no_ray)
    root = planted_experiment(tmp_path)
    make_untrusted(root, how)
    assert main(["resume", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "trusted like code" in err and str(root) in err
    assert main(["run", str(root / "sweep.yaml"), "--storage", str(tmp_path), "--resume"]) == 2
    assert not (tmp_path / "pwned").exists()


def test_the_planted_pickle_would_run_if_it_were_unpickled(tmp_path):
    """The refusal above is what stands between Ray's `Tuner.restore` and the planted code."""
    root = planted_experiment(tmp_path)
    pickle.loads((root / "main" / "tuner.pkl").read_bytes())
    assert (tmp_path / "pwned").exists()


# -- damaged experiment directories ------------------------------------------------------------

SWEEP = "name: exp\ntrial: {dataset: planted, model: resnet8, epochs: 3}\ngrid: {seed: [0, 1]}\n"


def small_experiment(root):
    """A bnsweep experiment as a driver leaves it mid-stage: seed 0 finished, seed 1 at epoch 2."""
    import json
    import random

    from bnsweep.layout.state import sweep_digest
    from bnsweep.testing import (
        FakeTrial,
        realistic_config,
        realistic_rows,
        write_experiment,
    )

    root.mkdir()
    (root / "sweep.yaml").write_text(SWEEP)
    (root / "bnsweep_state.json").write_text(json.dumps({"sweep_sha256": sweep_digest(SWEEP), "stages": {}}))
    rng = random.Random(0)
    configs = [{**realistic_config(seed, "all", "random"), "epochs": 3} for seed in (0, 1)]
    write_experiment(root / "main", [FakeTrial(configs[0], realistic_rows(3, rng)),
                                     FakeTrial(configs[1], realistic_rows(2, rng, final=False), status="RUNNING")])
    return root


def trial_file(root, seed: int, name: str):
    return next((root / "main").glob(f"*seed={seed}_*")) / name


def append(path, text: str) -> None:
    with open(path, "a") as fh:
        fh.write(text)


def insert_line(path, text: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join([lines[0], text, *lines[1:]]))


# (id, damage, the file the messages name, does results skip trial seed 1)
DAMAGES = [
    ("params-not-json", lambda r: trial_file(r, 1, "params.json").write_text("{seed: 1"), "params.json", True),
    ("params-a-list", lambda r: trial_file(r, 1, "params.json").write_text("[1, 2]"), "params.json", True),
    ("result-line-a-list", lambda r: append(trial_file(r, 1, "result.json"), "[1,2,3]\n"), "result.json", True),
    ("result-line-garbage-inside", lambda r: insert_line(trial_file(r, 1, "result.json"), "garbage\n"),
     "result.json", True),
    ("result-last-line-a-list", lambda r: append(trial_file(r, 1, "result.json"), "[1,2,3]"), "result.json", True),
    ("result-iteration-a-list", lambda r: append(trial_file(r, 1, "result.json"),
                                                 '{"training_iteration": [3], "epoch": 3}\n'), "result.json", True),
    ("state-not-trial-data", lambda r: next((r / "main").glob("experiment_state-*.json")).write_text(
        '{"trial_data": 5}'), "experiment_state-", False),
    ("state-trial-not-pairs", lambda r: next((r / "main").glob("experiment_state-*.json")).write_text(
        '{"trial_data": [["{}", "{}", "{}"]]}'), "experiment_state-", False),
]
# Damage only `resume` can notice: bnsweep's own sweep file, which `results` does not need.
RESUME_ONLY = [
    ("sweep-edited", lambda r: append(r / "sweep.yaml", "description: edited\n"), "sweep.yaml"),
    ("sweep-not-utf8", lambda r: (r / "sweep.yaml").write_bytes(SWEEP.encode() + b"# \xff\xfe\n"), "sweep.yaml"),
]
# A damaged (or too new) state file: one line and exit 2 from every command that reads the experiment.
STATE_DAMAGES = [
    ("state-not-json", lambda r: (r / "bnsweep_state.json").write_text('{"stages": '), "bnsweep_state.json"),
    ("state-stages-a-list", lambda r: (r / "bnsweep_state.json").write_text('{"stages": []}'),
     "bnsweep_state.json"),
    ("state-checkpoints-numbers", lambda r: (r / "bnsweep_state.json").write_text(
        '{"stages": {"main": {"finished": true, "trials": 2, "checkpoints": {"k": 1}}}}'), "bnsweep_state.json"),
    ("state-format-a-string", lambda r: (r / "bnsweep_state.json").write_text('{"format": "1", "stages": {}}'),
     "bnsweep_state.json"),
    ("state-format-newer", lambda r: (r / "bnsweep_state.json").write_text('{"format": 99, "stages": {}}'),
     "newer bnsweep"),
]


class RayWouldStart(Exception):
    pass


@pytest.fixture
def no_ray(monkeypatch):
    from bnsweep.sweep import driver

    def connect(*args, **kwargs):
        raise RayWouldStart

    monkeypatch.setattr(driver, "connect", connect)


@pytest.mark.parametrize("case_id, damage, named, skipped", DAMAGES, ids=[d[0] for d in DAMAGES])
def test_results_and_report_skip_a_damaged_trial_with_one_warning(case_id, damage, named, skipped, tmp_path, capsys):
    import io

    import pandas as pd

    from bnsweep.cli import main

    root = small_experiment(tmp_path / "exp")
    damage(root)
    commands = [["results", str(root), "--format", "csv"], ["results", str(root), "--history", "--format", "csv"]]
    if case_id in ("params-not-json", "state-not-trial-data"):  # report reads as results does; drawing is slow
        commands.append(["report", str(root), "-o", str(tmp_path / "report")])
    for args in commands:
        assert main(args) == 0, args
        out, err = capsys.readouterr()
        if case_id == "result-line-garbage-inside" and "--history" not in args:
            assert err == ""  # one row per trial reads only the last line of result.json, which is whole
            continue
        warnings = err.strip().splitlines()
        assert len(warnings) == 1 and warnings[0].startswith("bnsweep: warning: ") and named in warnings[0], err
        if args[0] == "results":
            seeds = set(pd.read_csv(io.StringIO(out))["seed"])
            assert seeds == ({0} if skipped else {0, 1}), args


@pytest.mark.parametrize("case_id, damage, named", [d[:3] for d in DAMAGES] + RESUME_ONLY + STATE_DAMAGES,
                         ids=[d[0] for d in DAMAGES + RESUME_ONLY + STATE_DAMAGES])
def test_resume_refuses_a_damaged_experiment_with_one_line(case_id, damage, named, tmp_path, capsys, no_ray):
    from bnsweep.cli import main

    root = small_experiment(tmp_path / "exp")
    damage(root)
    assert main(["resume", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("bnsweep: error: ") and named in err, err


@pytest.mark.parametrize("case_id, damage, named", STATE_DAMAGES, ids=[d[0] for d in STATE_DAMAGES])
def test_a_damaged_state_file_is_one_line_from_every_command(case_id, damage, named, tmp_path, capsys, no_ray):
    from bnsweep.cli import main

    root = small_experiment(tmp_path / "exp")
    for args in (["status", str(root)], ["prune", str(root), "--yes"], ["results", str(root)]):
        assert main(args) == 0, args  # positive control: the intact experiment reads
    with pytest.raises(RayWouldStart):  # and resume passes every check
        main(["resume", str(root)])
    capsys.readouterr()
    state = (root / "bnsweep_state.json").read_text()
    for args in (["status", str(root)], ["status", str(root / "main")], ["prune", str(root), "--yes"],
                 ["results", str(root)], ["results", str(root / "main")], ["resume", str(root)]):
        damage(root)
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("bnsweep: error: ") and named in err, (args, err)
        (root / "bnsweep_state.json").write_text(state)


def test_a_state_file_without_a_format_number_reads_as_format_1(tmp_path):
    import json

    from bnsweep.layout.state import STATE_FORMAT, load_state, new_state

    root = small_experiment(tmp_path / "exp")  # written as bnsweep wrote it before the number existed
    assert "format" not in json.loads((root / "bnsweep_state.json").read_text())
    assert load_state(str(root))["format"] == 1
    assert new_state("a", "")["format"] == STATE_FORMAT >= 1


def test_a_row_being_written_is_not_damage(tmp_path, capsys, no_ray):
    from bnsweep.cli import main

    root = small_experiment(tmp_path / "exp")
    append(trial_file(root, 1, "result.json"), '{"epoch": 3, "training_iter')  # the driver died mid-write
    assert main(["results", str(root), "--history", "--format", "csv"]) == 0
    assert capsys.readouterr().err == ""
    with pytest.raises(RayWouldStart):  # every check passed: resume goes on to start Ray
        main(["resume", str(root)])
