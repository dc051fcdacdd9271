"""One driver per experiment: a second `bnsweep run` or `resume` of the same experiment refuses. An OS
file lock on local storage (released when the driver dies), a heartbeat lock behind a URI."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
import uuid
from typing import Any

import pyarrow.fs as pafs

from bnsweep.errors import ConfigError
from bnsweep.files import is_uri
from bnsweep.layout.paths import HEARTBEAT_FILE, LOCK_FILE, filesystem

HEARTBEAT_S = 10.0  # how often a driver refreshes its heartbeat
STALE_S = 60.0  # a heartbeat this old belongs to a driver that is gone
SETTLE_S = 2.0  # a new lock is read back after this long: of two drivers starting at once, one wins
BUSY = "an experiment no other bnsweep driver is running"


@contextlib.contextmanager
def driver_lock(root: str):
    """One driver per experiment: a second `bnsweep run`/`resume` on the same experiment refuses.
    Local directories take an OS file lock (released when the driver dies); URIs a heartbeat lock."""
    if is_uri(root):
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
