"""bnsweep: Ray Tune sweeps of adversarial training (which parameters must train for robustness?)."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """`bnsweep.run_sweep`, `bnsweep.resume` (see `bnsweep.api`) and `bnsweep.train` (see
    `bnsweep.core.rundir`), imported on first use so that `import bnsweep` stays light."""
    if name == "train":
        import importlib

        return importlib.import_module("bnsweep.core.rundir").train
    if name in ("run_sweep", "resume"):
        import importlib

        # by name: modules that import `bnsweep` (for __version__) must not depend on the entry points
        return getattr(importlib.import_module("bnsweep.api"), name)
    raise AttributeError(f"module 'bnsweep' has no attribute {name!r}")


def code_version() -> str:
    """`__version__`, and the commit when running from a checkout: `0.1.0 (commit 1a2b3c...)`
    (see `bnsweep.provenance`)."""
    from bnsweep.provenance import code

    return str(code())
