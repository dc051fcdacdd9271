"""Room left on local storage for the next checkpoint: stopping early keeps every result and
checkpoint written so far whole."""

from __future__ import annotations

import os
import shutil

from bnsweep.files import is_uri


class StorageFull(OSError):
    """Too little room left on the storage for the next checkpoint."""


def check_free_space(root: str, checkpoint_dir: str) -> None:
    """Refuse to write a checkpoint that would leave less than two more of its size free on local
    storage: stopping early keeps every result and checkpoint written so far whole."""
    if is_uri(root):
        return
    needed = 3 * sum(f.stat().st_size for f in os.scandir(checkpoint_dir) if f.is_file())
    path = root
    while not os.path.exists(path):
        path = os.path.dirname(path)
    free = shutil.disk_usage(path).free
    if free < needed:
        raise StorageFull(f"storage {root}: {free / 2**20:.1f} MiB free, {needed / 2**20:.1f} MiB needed "
                          f"to keep checkpointing safely; free space, then run: bnsweep resume {root}")
