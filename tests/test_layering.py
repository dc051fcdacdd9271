"""The layering holds where it is claimed: `bnsweep status`, `bnsweep.results` and the layout import
neither Ray nor torch, the sweep file parser imports no Ray; each checked in a fresh interpreter,
with a positive control showing the check sees a heavy import when there is one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import bnsweep
from bnsweep.testing import write_example_sweep

SWEEP = "name: light\ntrial: {dataset: planted, model: resnet8, epochs: 2, trainable: bn}\ngrid: {seed: [0, 1]}\n"


def imported(code: str, *argv: str) -> set[str]:
    """The heavy packages (torch, ray) a fresh interpreter imported running `code`."""
    probe = code + "\nimport sys; print(' '.join(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'ray'})))"
    out = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, check=True)
    return set(out.stdout.split("\n")[-2].split())


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    return write_example_sweep(tmp_path_factory.mktemp("light") / "example", epochs=2, seeds=1)


def test_the_probe_sees_heavy_imports():  # positive control: the check below can fail
    assert imported("import bnsweep.core.models") == {"torch"}
    assert imported("import ray") == {"ray"}


@pytest.mark.parametrize("code", [
    "from bnsweep.cli import main; assert main(['status', sys.argv[1]]) == 0",
    "from bnsweep import results; results.load(sys.argv[1]); results.history(sys.argv[1])",
    "from bnsweep.results import report, status, tables; status.sweep_status(sys.argv[1])",
    "import bnsweep.layout.paths, bnsweep.layout.state, bnsweep.layout.tune, bnsweep.layout.plans, "
    "bnsweep.layout.labels",
    "import bnsweep.sweep.spec, bnsweep.sweep.lock, bnsweep.sweep.trust",
], ids=["status", "results", "results-modules", "layout", "spec-module"])
def test_reading_results_imports_neither_ray_nor_torch(code, example):
    assert imported("import sys\n" + code, str(example)) == set()


def test_parsing_a_sweep_file_imports_no_ray(tmp_path):
    path = tmp_path / "light.yaml"
    path.write_text(SWEEP)
    code = ("import sys\nfrom bnsweep.sweep.spec import load_sweep\n"
            "assert load_sweep(sys.argv[1]).stages[0].num_trials == 2")
    # torch: only to resolve the model's trainable set on the meta device (no weights, no data)
    assert "ray" not in imported(code, str(path))


def test_the_command_line_is_thin():
    """Every function of the command line fits on a screen (40 lines): a handler that grows past that
    holds domain logic, which belongs in the layers below; every subcommand's parser sits in the
    module of its handler."""
    import ast

    from bnsweep.cli import COMMANDS

    long = []
    for path in sorted((Path(bnsweep.__file__).parent / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno + 1 > 40:
                long.append(f"{path.name}:{node.name}")
    assert long == []
    for add in COMMANDS:
        module = sys.modules[add.__module__]
        assert hasattr(module, "cmd_" + add.__name__.removeprefix("add_")), add
