"""bnsweep: Ray Tune sweeps of adversarial training (which parameters must train for robustness?)."""

__version__ = "0.1.0"


def code_version() -> str:
    """`__version__`, plus the git commit (and `-dirty`) when running from a checkout: recorded
    beside every published number (report.md, benchmark output), as airbench records its code."""
    import os
    import subprocess

    here = os.path.dirname(os.path.abspath(__file__))
    try:
        sha = subprocess.run(["git", "-C", here, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{sha}" + ("-dirty" if dirty else "")
