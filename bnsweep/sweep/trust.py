"""The trust check before Ray unpickles anything of an experiment directory (`run`, `resume`) and
before `prune` deletes in it."""

from __future__ import annotations

import os
import stat

from bnsweep import files
from bnsweep.errors import ConfigError
from bnsweep.files import is_uri

TRUSTED = ("an experiment directory of plain files and directories, all yours and not writable by others: Ray "
           "unpickles files of it (tuner.pkl, state files) to resume and prune deletes in it, so it is trusted "
           "like code")


def check_trusted(root: str) -> None:
    """Refuse a local experiment directory that another user could have planted a pickle in.

    Ray's `Tuner.restore` unpickles `tuner.pkl` and state files that may embed pickles before it
    checks anything, so whoever can write an experiment directory can run code in the driver that
    resumes it. Every file and directory under `root` must belong to this user, not be writable by
    others and be a plain file or directory: not a symbolic link (which could lead Ray, or `prune`,
    out of the experiment), a FIFO (which would hang the reader), a device or a socket. URIs have no
    owners to check: there the storage's access control is the boundary."""
    if is_uri(root) or not os.path.isdir(root):
        return
    uid = os.getuid()

    def check(path: str) -> None:
        st = os.lstat(path)
        mode = st.st_mode
        problem = (files.kind(mode) if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))
                   else f"owned by uid {st.st_uid}, not {uid}" if st.st_uid != uid
                   else "writable by others" if mode & stat.S_IWOTH else None)
        if problem:
            fix = ("make it yours and run chmod -R o-w" if stat.S_ISREG(mode) or stat.S_ISDIR(mode)
                   else "replace it by a copy of what it is meant to hold, in")
            # the file inside the experiment, which the line ends with in full (a long path would be cut)
            raise ConfigError("experiment", os.path.relpath(path, root) if path != root else root,
                              f"{TRUSTED}; this is {problem}: if you trust what is in it, {fix} {root}")

    check(root)
    for directory, dirs, names in os.walk(root):
        for name in dirs + names:
            check(os.path.join(directory, name))
