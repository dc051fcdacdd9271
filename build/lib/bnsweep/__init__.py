"""bnsweep: Ray Tune sweeps of adversarial training (which parameters must train for robustness?)."""

__version__ = "0.1.0"


def code_commit() -> str | None:
    """The git commit of the bnsweep checkout this runs from (noting uncommitted changes), or
    None when bnsweep is not a git checkout of its own (an installed package) or git is missing.
    Recorded beside every published number (report.md, benchmark output), as airbench does."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=10, check=True)
        return done.stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != root:
            return None  # bnsweep installed inside some other repository
        commit, changes = git("rev-parse", "HEAD"), git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + (" with uncommitted changes" if changes else "")


def code_version() -> str:
    """`__version__`, and the commit when running from a checkout: `0.1.0 (commit 1a2b3c...)`."""
    commit = code_commit()
    return __version__ + (f" (commit {commit})" if commit else "")
