"""Where experiments live: local paths and URIs (s3://, gs://, file://) through one pyarrow filesystem API."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import stat
import sys
import threading
import time
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from bnsweep.errors import ConfigError, DataError

SWEEP_FILE = "sweep.yaml"  # the sweep file as run, beside the stages' Ray Tune experiments
OVERRIDES_FILE = "overrides.yaml"  # the `--set` trial keys it ran with, when there were any
STATE_FILE = "bnsweep_state.json"  # finished stages and the checkpoints later stages start from
LOCK_FILE = ".bnsweep.lock"  # local experiments: an OS file lock
HEARTBEAT_FILE = ".bnsweep_driver.json"  # experiments behind a URI: host, pid and heartbeat of the driver
HEARTBEAT_S = 10.0  # how often a driver refreshes its heartbeat
STALE_S = 60.0  # a heartbeat this old belongs to a driver that is gone
SETTLE_S = 2.0  # a new lock is read back after this long: of two drivers starting at once, one wins


def filesystem(path: str | os.PathLike) -> tuple[pafs.FileSystem, str, str]:
    """(filesystem, path inside it, prefix that turns such a path back into a URI)."""
    text = os.fspath(path)
    if "://" not in text:
        return pafs.LocalFileSystem(), os.path.abspath(text), ""
    try:
        fs, inner = pafs.FileSystem.from_uri(text)
    except (pa.ArrowException, OSError) as err:  # unknown scheme, bad syntax, missing driver (hdfs)
        raise ConfigError("path", text, "a local path or a URI of a file system pyarrow knows (file:///..., "
                          f"s3://..., gs://...): {str(err).strip().splitlines()[0]}") from None
    prefix = "" if isinstance(fs, pafs.LocalFileSystem) else text.split("://", 1)[0] + "://"
    return fs, inner.rstrip("/") or "/", prefix


def location(text: str | os.PathLike) -> str:
    """A storage or experiment location as bnsweep spells it: a `file:` URI becomes its local path and
    local paths are absolute, so every spelling of one local directory takes the same driver lock
    (symbolic links and `..` reach the same lock file); other URIs stay as given."""
    text = os.fspath(text)
    if text.startswith("file:"):
        try:
            text = pafs.FileSystem.from_uri(text)[1]
        except (ValueError, OSError) as err:  # pyarrow.ArrowInvalid is a ValueError
            raise ConfigError("path", text, f"a local path or a file:///absolute/path URI ({err})") from None
    return text.rstrip("/") if "://" in text else os.path.abspath(text)


def sweep_dir(storage: str, name: str) -> str:
    return f"{location(storage).rstrip('/')}/{name}"


def read_text(uri: str) -> str | None:
    """A UTF-8 file's text; None when it is missing."""
    fs, path, _ = filesystem(uri)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    with fs.open_input_stream(path) as fh:
        data = fh.read()
    try:
        return data.decode()
    except UnicodeDecodeError as err:
        raise DataError(f"{uri}: damaged (byte {err.start} is not UTF-8); "
                        "allowed: the file as bnsweep wrote it") from None


def write_text(uri: str, text: str) -> None:
    """Write via a temporary name and a move, so a full disk never leaves half a state file."""
    fs, path, _ = filesystem(uri)
    fs.create_dir(os.path.dirname(path), recursive=True)
    tmp = f"{path}.tmp"
    with fs.open_output_stream(tmp) as fh:
        fh.write(text.encode())
    fs.move(tmp, path)


def sweep_digest(text: str) -> str:
    """What the state file records of the sweep file as run, to notice edits."""
    return hashlib.sha256(text.encode()).hexdigest()


def load_state(root: str) -> dict[str, Any]:
    """The state file ({"stages": {name: {finished, trials, checkpoints}}, "sweep_sha256"}), checked:
    a damaged one is a DataError naming it."""
    uri = f"{root}/{STATE_FILE}"
    text = read_text(uri)
    if text is None:
        return {"stages": {}}
    try:
        state = json.loads(text)
    except ValueError:
        state = None
    if not _valid_state(state):
        raise DataError(f"{uri}: damaged (not the JSON bnsweep writes); allowed: the file as bnsweep wrote it "
                        "(restore it from a copy, or delete it: resume then reads finished stages back "
                        "from their Ray Tune experiments)")
    return state


def _valid_state(state: Any) -> bool:
    if not isinstance(state, dict) or not isinstance(state.get("stages"), dict):
        return False
    if not isinstance(state.get("sweep_sha256", ""), str):
        return False
    return all(isinstance(stage, dict) and isinstance(stage.get("finished"), bool)
               and isinstance(stage.get("checkpoints"), dict)
               and all(isinstance(k, str) and isinstance(v, str) for k, v in stage["checkpoints"].items())
               for stage in state["stages"].values())


BUSY = "an experiment no other bnsweep driver is running"


@contextlib.contextmanager
def driver_lock(root: str):
    """One driver per experiment: a second `bnsweep run`/`resume` on the same experiment refuses.
    Local directories take an OS file lock (released when the driver dies); URIs a heartbeat lock."""
    if "://" in root:
        fs, path, _ = filesystem(root)
        with heartbeat_lock(fs, f"{path}/{HEARTBEAT_FILE}", root):
            yield
        return
    from filelock import FileLock, Timeout

    os.makedirs(root, exist_ok=True)
    lock = FileLock(os.path.join(root, LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ConfigError("experiment", root, BUSY) from None
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def heartbeat_lock(fs: pafs.FileSystem, path: str, shown: str):
    """A lock object on storage without file locks (object stores): it names the driver's host and
    pid and a heartbeat, refreshed every HEARTBEAT_S by a thread. A lock whose heartbeat is older than
    STALE_S, or whose driver ran on this host and is gone, belongs to a dead driver and is taken over.
    Two drivers starting within SETTLE_S of each other: the one whose write landed last keeps it."""
    me = {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex}
    held = _read_lock(fs, path)
    if held is not None:
        beat = held.get("heartbeat")
        age = time.time() - beat if isinstance(beat, (int, float)) else None
        if not _stale(held, age):
            raise ConfigError("experiment", shown, f"{BUSY} (driver pid {held.get('pid')} on "
                              f"{held.get('host')}, heartbeat {age:.0f} s ago)")
        last = f"last heartbeat {age:.0f} s ago" if age is not None else "its lock is unreadable"
        print(f"bnsweep: warning: {shown}: taking over from driver pid {held.get('pid')} on {held.get('host')}, "
              f"which is gone ({last})", file=sys.stderr)
    _write_lock(fs, path, me)
    time.sleep(SETTLE_S)
    winner = _read_lock(fs, path) or {}
    if winner.get("token") != me["token"]:
        raise ConfigError("experiment", shown, f"{BUSY} (driver pid {winner.get('pid')} on {winner.get('host')} "
                          "started at the same time)")
    stop = threading.Event()
    beater = threading.Thread(target=_heartbeat, args=(fs, path, me, shown, stop), daemon=True)
    beater.start()
    try:
        yield
    finally:
        stop.set()
        beater.join()
        if (_read_lock(fs, path) or {}).get("token") == me["token"]:
            fs.delete_file(path)


def _stale(held: dict[str, Any], age: float | None) -> bool:
    if age is None or age > STALE_S:
        return True
    if held.get("host") != socket.gethostname() or not isinstance(held.get("pid"), int):
        return False
    try:
        os.kill(held["pid"], 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, another user's
        return False
    return False


def _read_lock(fs: pafs.FileSystem, path: str) -> dict[str, Any] | None:
    """The lock's content; {} when it is there but unreadable (a dead driver's half write)."""
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    try:
        with fs.open_input_stream(path) as fh:
            held = json.loads(fh.read())
    except (OSError, ValueError):
        return {}
    return held if isinstance(held, dict) else {}


def _write_lock(fs: pafs.FileSystem, path: str, me: dict[str, Any]) -> None:
    """Write whole or not at all (a temporary name, then a move): a half-written lock would read as a
    dead driver's."""
    fs.create_dir(os.path.dirname(path), recursive=True)
    tmp = f"{path}.{me['token']}.tmp"
    with fs.open_output_stream(tmp) as fh:
        fh.write(json.dumps({**me, "heartbeat": time.time()}).encode())
    fs.move(tmp, path)


def _heartbeat(fs: pafs.FileSystem, path: str, me: dict[str, Any], shown: str, stop: threading.Event) -> None:
    """Refresh the lock until `stop`; say so once if another driver took it over meanwhile."""
    warned = False
    while not stop.wait(HEARTBEAT_S):
        try:
            holder = _read_lock(fs, path) or {}
            if holder.get("token") == me["token"]:
                _write_lock(fs, path, me)
            elif not warned:
                warned = True
                print(f"bnsweep: warning: {shown}: driver pid {holder.get('pid')} on {holder.get('host')} took "
                      "over this experiment's lock (this driver's heartbeat stalled); stop one of them",
                      file=sys.stderr)
        except OSError as err:  # storage unreachable for a moment: try again at the next beat
            print(f"bnsweep: warning: {shown}: cannot refresh the driver lock ({err})", file=sys.stderr)


TRUSTED = ("an experiment directory whose files are all yours and not writable by others: Ray unpickles "
           "files of it (tuner.pkl, state files) to resume, so it is trusted like code")


def check_trusted(root: str) -> None:
    """Refuse a local experiment directory that another user could have planted a pickle in.

    Ray's `Tuner.restore` unpickles `tuner.pkl` and state files that may embed pickles before it
    checks anything, so whoever can write an experiment directory can run code in the driver that
    resumes it. Every file and directory under `root` must belong to this user, not be writable by
    others and not be a symbolic link. URIs have no owners to check: there the storage's access
    control is the boundary."""
    if "://" in root or not os.path.isdir(root):
        return
    uid = os.getuid()

    def check(path: str) -> None:
        st = os.lstat(path)
        problem = ("a symbolic link" if stat.S_ISLNK(st.st_mode) else f"owned by uid {st.st_uid}, not {uid}"
                   if st.st_uid != uid else "writable by others" if st.st_mode & stat.S_IWOTH else None)
        if problem:
            raise ConfigError("experiment", f"{path} ({problem})",
                              f"{TRUSTED}; if you trust what is in it, make it yours and run chmod -R o-w {root}")

    check(root)
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            check(os.path.join(directory, name))


class StorageFull(OSError):
    """Too little room left on the storage for the next checkpoint."""


def check_free_space(root: str, checkpoint_dir: str) -> None:
    """Refuse to write a checkpoint that would leave less than two more of its size free on local
    storage: stopping early keeps every result and checkpoint written so far whole."""
    if "://" in root:
        return
    needed = 3 * sum(f.stat().st_size for f in os.scandir(checkpoint_dir) if f.is_file())
    path = root
    while not os.path.exists(path):
        path = os.path.dirname(path)
    free = shutil.disk_usage(path).free
    if free < needed:
        raise StorageFull(f"storage {root}: {free / 2**20:.1f} MiB free, {needed / 2**20:.1f} MiB needed "
                          f"to keep checkpointing safely; free space, then run: bnsweep resume {root}")
