"""Where experiments live: local paths and URIs (s3://, gs://, file://) through one pyarrow filesystem API."""

from __future__ import annotations

import os

import pyarrow.fs as pafs

SWEEP_FILE = "sweep.yaml"  # the sweep file as run, beside the stages' Ray Tune experiments


def filesystem(path: str | os.PathLike) -> tuple[pafs.FileSystem, str, str]:
    """(filesystem, path inside it, prefix that turns such a path back into a URI)."""
    text = os.fspath(path)
    if "://" not in text:
        return pafs.LocalFileSystem(), os.path.abspath(text), ""
    fs, inner = pafs.FileSystem.from_uri(text)
    prefix = "" if isinstance(fs, pafs.LocalFileSystem) else text.split("://", 1)[0] + "://"
    return fs, inner.rstrip("/") or "/", prefix
