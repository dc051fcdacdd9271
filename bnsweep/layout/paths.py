"""Where an experiment's files are: local paths and URIs (s3://, gs://, file://) through one pyarrow
filesystem API, and bnsweep's own file names; every read bounded (see `open_file`)."""

from __future__ import annotations

import os
import posixpath
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from bnsweep import files
from bnsweep.errors import ConfigError, DataError
from bnsweep.files import is_uri

SWEEP_FILE = "sweep.yaml"  # the sweep file as run, beside the stages' Ray Tune experiments
OVERRIDES_FILE = "overrides.yaml"  # the `--set` trial keys it ran with, when there were any
STATE_FILE = "bnsweep_state.json"  # finished stages and the checkpoints later stages start from
LOCK_FILE = ".bnsweep.lock"  # local experiments: an OS file lock
HEARTBEAT_FILE = ".bnsweep_driver.json"  # experiments behind a URI: host, pid and heartbeat of the driver


def filesystem(path: str | os.PathLike) -> tuple[pafs.FileSystem, str, str]:
    """(filesystem, path inside it, prefix that turns such a path back into a URI)."""
    text = os.fspath(path)
    if not is_uri(text):
        return pafs.LocalFileSystem(), os.path.abspath(text), ""
    try:
        fs, inner = pafs.FileSystem.from_uri(text)
    except (pa.ArrowException, OSError) as err:  # unknown scheme, bad syntax, missing driver (hdfs)
        raise ConfigError("path", text, "a local path or a URI of a file system pyarrow knows (file:///..., "
                          f"s3://..., gs://...): {str(err).strip().splitlines()[0]}") from None
    prefix = "" if isinstance(fs, pafs.LocalFileSystem) else text.split("://", 1)[0] + "://"
    return fs, inner.rstrip("/") or "/", prefix


def location(given: str | os.PathLike) -> str:
    """A storage or experiment location as bnsweep spells it: a `file:` URI becomes its local path and
    local paths are absolute, so every spelling of one local directory takes the same driver lock
    (symbolic links and `..` reach the same lock file); other URIs stay as given."""
    text = os.fspath(given)
    if text.startswith("file:"):
        try:
            text = pafs.FileSystem.from_uri(text)[1]
        except (ValueError, OSError) as err:  # pyarrow.ArrowInvalid is a ValueError
            raise ConfigError("path", text, f"a local path or a file:///absolute/path URI ({err})") from None
    return text.rstrip("/") if is_uri(text) else os.path.abspath(text)


def sweep_dir(storage: str, name: str) -> str:
    """The directory of experiment `name` under `storage` (a path or URI)."""
    return f"{location(storage).rstrip('/')}/{name}"


MAX_FILE_BYTES = 64 << 20  # bnsweep's own experiment files (sweep.yaml, bnsweep_state.json, overrides.yaml)


def damaged(uri: str, problem: str) -> DataError:
    """The one-line DataError for a file of an experiment that does not read as written."""
    return DataError(f"{uri}: damaged ({problem}); allowed: the file as bnsweep or Ray wrote it")


def open_file(fs: pafs.FileSystem, path: str, uri: str, limit: int) -> tuple[Any, int]:
    """(a binary file opened for reading and seeking, its size) of a file of an experiment: only a
    regular file of at most `limit` bytes, and locally not through a symbolic link (an experiment
    directory holds none), so a FIFO, a device, a link out of the experiment or a sparse 40 GiB file
    is a DataError naming it, never a hang or a memory blow-up."""
    if isinstance(fs, pafs.LocalFileSystem):
        try:
            fh = files.open_regular(path, limit, follow=False)
        except files.UnreadableFile as err:
            raise damaged(uri, err.problem) from None
        return fh, os.fstat(fh.fileno()).st_size
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.File:
        raise damaged(uri, "missing" if info.type == pafs.FileType.NotFound else "not a file")
    if info.size > limit:
        raise damaged(uri, f"larger than {files.size_text(limit)} ({files.size_text(info.size)})")
    return fs.open_input_file(path), info.size


def read_file(fs: pafs.FileSystem, path: str, uri: str, limit: int) -> bytes:
    """The bytes of a file of an experiment (see `open_file`)."""
    fh, _ = open_file(fs, path, uri, limit)
    with fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise damaged(uri, f"larger than {files.size_text(limit)}")
    return data


def read_bytes(uri: str, limit: int) -> bytes | None:
    """A file of an experiment by its URI or path (see `open_file`); None when it is missing."""
    fs, path, _ = filesystem(uri)
    local = isinstance(fs, pafs.LocalFileSystem)
    if not os.path.lexists(path) if local else fs.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    return read_file(fs, path, uri, limit)


def read_text(uri: str, limit: int = MAX_FILE_BYTES) -> str | None:
    """A UTF-8 file's text (see `read_bytes`); None when it is missing."""
    data = read_bytes(uri, limit)
    if data is None:
        return None
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


def locate_sweep(path: str) -> tuple[str, str | None]:
    """(sweep directory, the one stage asked for or None) for a sweep or a stage directory."""
    root = path if is_uri(path) else os.path.abspath(path)
    if read_text(f"{root}/{SWEEP_FILE}") is None and read_text(f"{posixpath.dirname(root)}/{SWEEP_FILE}"):
        return posixpath.dirname(root), posixpath.basename(root)
    return root, None
