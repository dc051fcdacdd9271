"""The one rule for every local path a user names or an experiment holds: what may be read, and where
output may go.

Read: regular files only, after resolving symbolic links (`follow=False`: not even a link), and no
larger than the reader's bound, both checked before a byte is read. A FIFO would block the reader
forever, `/dev/zero` or a sparse 40 GiB file would fill the memory. The path is checked with
`os.stat` before it is opened (so no device is ever opened) and opened non-blocking, then checked again
on the open descriptor (so a file swapped in between is still caught, and opening a FIFO cannot hang).

Write: a new path, or an existing regular file (a directory where a directory is asked for), under a
directory one may write to; `/dev/full` or a FIFO is refused before any work.
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

from bnsweep.errors import BadInput, ConfigError, shown


class UnreadableFile(BadInput):
    """A path that is not a readable regular file within the reader's bound; `problem` says why
    ("a FIFO", "larger than 64 MiB (40 GiB)", ...), str() names the path too."""

    def __init__(self, path: str, problem: str = "not a readable regular file"):
        self.path, self.problem = path, problem
        super().__init__(f"{shown(path)}: {problem}")


def size_text(n: float) -> str:
    """Bytes for a message: 64 MiB, 1.5 GiB, 300 bytes."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} bytes"


def kind(mode: int) -> str:
    """What a file mode is, in words (for messages)."""
    for test, name in ((stat.S_ISREG, "a file"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _check(st: os.stat_result, path: str, limit: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise UnreadableFile(path, kind(st.st_mode))
    if st.st_size > limit:
        raise UnreadableFile(path, f"larger than {size_text(limit)} ({size_text(st.st_size)})")


def regular_file(path: str, limit: int, *, follow: bool = True) -> os.stat_result:
    """The stat of `path` if it is a regular file of at most `limit` bytes, else UnreadableFile.
    `follow=False`: a symbolic link is refused too."""
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except FileNotFoundError:
        raise UnreadableFile(path, "a symbolic link to nothing" if os.path.islink(path) else "does not exist") from None
    except OSError as err:
        raise UnreadableFile(path, f"cannot be read ({err.strerror})") from None
    _check(st, path, limit)
    return st


def open_regular(path: str, limit: int, *, follow: bool = True) -> BinaryIO:
    """`path` opened for reading in binary, once it passed `regular_file` (twice: by path, then the
    open descriptor)."""
    regular_file(path, limit, follow=follow)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as err:
        raise UnreadableFile(path, f"cannot be read ({err.strerror})") from None
    try:
        _check(os.fstat(fd), path, limit)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: str, limit: int, *, follow: bool = True) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (see `open_regular`); never more than
    `limit` are read, even from a file that grows meanwhile."""
    with open_regular(path, limit, follow=follow) as fh:
        try:
            data = fh.read(limit + 1)
        except OSError as err:
            raise UnreadableFile(path, f"cannot be read ({err.strerror})") from None
    if len(data) > limit:
        raise UnreadableFile(path, f"larger than {size_text(limit)}")
    return data


def is_uri(path: str | os.PathLike) -> bool:
    """A URI (`s3://...`, `gs://...`, `file:///...`) rather than a local path: the one test of it."""
    return "://" in os.fspath(path)


def output_path(path: str, option: str, *, directory: bool) -> str:
    """An output path, checked before any work: local, new or of the right kind (a regular file, or a
    directory when `directory`; never a FIFO or device such as /dev/full), under a directory one may
    write to (missing parent directories are created when writing). Returns it absolute."""
    allowed = "a directory, new or existing" if directory else "a file name: a new or regular file"
    if is_uri(path):
        raise ConfigError(option, path, f"a local path: {allowed}")
    path = os.path.abspath(path)
    if os.path.exists(path):
        mode = os.stat(path).st_mode
        if not (stat.S_ISDIR(mode) if directory else stat.S_ISREG(mode)):
            raise ConfigError(option, path, f"{allowed} (this is {kind(mode)})")
    existing = path if os.path.exists(path) else os.path.dirname(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) and existing != path:
        raise ConfigError(option, path, f"{allowed} ({existing} is {kind(os.stat(existing).st_mode)})")
    if not os.access(existing, os.W_OK):
        raise ConfigError(option, path, f"{allowed} where you may write ({existing} is not writable)")
    return path


def write_failed(option: str, path: str, err: OSError) -> ConfigError:
    """The one line for an output that could not be written after all (a full disk)."""
    return ConfigError(option, path, f"a path with room to write ({err.strerror or err})")
