"""Where experiments live: local paths and URIs (s3://, gs://, file://) through one pyarrow filesystem API."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from typing import Any

import pyarrow.fs as pafs

from bnsweep.errors import ConfigError

SWEEP_FILE = "sweep.yaml"  # the sweep file as run, beside the stages' Ray Tune experiments
OVERRIDES_FILE = "overrides.yaml"  # the `--set` trial keys it ran with, when there were any
STATE_FILE = "bnsweep_state.json"  # finished stages and the checkpoints later stages start from
LOCK_FILE = ".bnsweep.lock"


def filesystem(path: str | os.PathLike) -> tuple[pafs.FileSystem, str, str]:
    """(filesystem, path inside it, prefix that turns such a path back into a URI)."""
    text = os.fspath(path)
    if "://" not in text:
        return pafs.LocalFileSystem(), os.path.abspath(text), ""
    fs, inner = pafs.FileSystem.from_uri(text)
    prefix = "" if isinstance(fs, pafs.LocalFileSystem) else text.split("://", 1)[0] + "://"
    return fs, inner.rstrip("/") or "/", prefix


def sweep_dir(storage: str, name: str) -> str:
    storage = storage if "://" in storage else os.path.abspath(storage)
    return f"{storage.rstrip('/')}/{name}"


def read_text(uri: str) -> str | None:
    fs, path, _ = filesystem(uri)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    with fs.open_input_stream(path) as fh:
        return fh.read().decode()


def write_text(uri: str, text: str) -> None:
    """Write via a temporary name and a move, so a full disk never leaves half a state file."""
    fs, path, _ = filesystem(uri)
    fs.create_dir(os.path.dirname(path), recursive=True)
    tmp = f"{path}.tmp"
    with fs.open_output_stream(tmp) as fh:
        fh.write(text.encode())
    fs.move(tmp, path)


def load_state(root: str) -> dict[str, Any]:
    text = read_text(f"{root}/{STATE_FILE}")
    return json.loads(text) if text else {"stages": {}}


@contextlib.contextmanager
def driver_lock(root: str):
    """One driver per experiment: a second `bnsweep run`/`resume` on the same directory refuses."""
    if "://" in root:
        yield
        return
    from filelock import FileLock, Timeout

    os.makedirs(root, exist_ok=True)
    lock = FileLock(os.path.join(root, LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ConfigError("experiment", root, "an experiment no other bnsweep driver is running") from None
    try:
        yield
    finally:
        lock.release()


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
