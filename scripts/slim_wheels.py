"""Make a wheelhouse small enough to carry: drop the parts of wheels that bnsweep never loads.

    python scripts/slim_wheels.py WHEELHOUSE [--lzma]

What is dropped (`DEAD_WEIGHT`; sizes for Ray 2.60 on CPython 3.12, manylinux x86_64):
- Ray (79 MB): its Java workers, `ray/jars/` (32 MB), and its dashboard's web page,
  `ray/dashboard/client/build/` (2.5 MB): Ray Tune with Python trials and no dashboard needs
  neither. 44 MB remain.
- pyautoattack 0.2.0 (42 MB): `pyautoattack/examples/`, an example model (42 MB) and scripts.

Each slimmed wheel keeps its name (pip finds it as before), and its RECORD loses the dropped files'
lines, so the wheel stays consistent. `--lzma` also recompresses every wheel with LZMA instead of
deflate (Ray: 44 -> 33 MB): pip, which unpacks wheels with Python's zipfile, installs such wheels;
other installers may refuse them.
"""

from __future__ import annotations

import argparse
import glob
import os
import tempfile
import zipfile

DEAD_WEIGHT = {"ray": ("ray/jars/", "ray/dashboard/client/build/"), "pyautoattack": ("pyautoattack/examples/",)}


def rewrite(wheel: str, dropped: tuple[str, ...], lzma: bool) -> int:
    """Rewrite `wheel` in place without the files under `dropped`; return how many were dropped."""
    count = 0
    fd, tmp = tempfile.mkstemp(suffix=".whl", dir=os.path.dirname(os.path.abspath(wheel)))
    os.close(fd)
    try:
        with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w") as out:
            for info in src.infolist():
                if info.filename.startswith(dropped):
                    count += 1
                    continue
                data = src.read(info)
                if dropped and info.filename.endswith(".dist-info/RECORD"):
                    data = b"".join(line for line in data.splitlines(keepends=True)
                                    if not line.decode().startswith(dropped))
                if lzma:
                    info.compress_type = zipfile.ZIP_LZMA
                out.writestr(info, data)
        os.replace(tmp, wheel)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return count


def slim(wheelhouse: str, lzma: bool = False) -> list[str]:
    """Slim every wheel of `wheelhouse` that has dead weight (all of them with `lzma`); one line each."""
    lines = []
    for wheel in sorted(glob.glob(os.path.join(wheelhouse, "*.whl"))):
        name = os.path.basename(wheel).split("-")[0].lower().replace("_", "-")
        dropped = DEAD_WEIGHT.get(name, ())
        if not dropped and not lzma:
            continue
        before = os.path.getsize(wheel)
        count = rewrite(wheel, dropped, lzma)
        lines.append(f"{os.path.basename(wheel)}: {before / 2**20:.1f} -> {os.path.getsize(wheel) / 2**20:.1f} MiB"
                     + (f" ({count} files of {', '.join(dropped)} dropped)" if dropped else ""))
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("wheelhouse", help="a directory of wheels (rewritten in place)")
    p.add_argument("--lzma", action="store_true", help="LZMA-compress every wheel (about a quarter smaller; pip only)")
    args = p.parse_args(argv)
    print("\n".join(slim(args.wheelhouse, args.lzma)) or "nothing to slim")


if __name__ == "__main__":
    main()
