"""The README stands alone and stays true: its table of trial keys and its layout match the code."""

from __future__ import annotations

import re
from pathlib import Path

from bnsweep.core.keys import key_table

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def test_readme_carries_the_generated_table_of_trial_keys():
    assert key_table() in README, "regenerate the table with: bnsweep validate --keys"


def test_layout_section_names_every_package_and_module():
    layout = README.split("## Layout", 1)[1].split("\n## ", 1)[0]
    for path in sorted((REPO / "bnsweep").iterdir()):
        if path.name.startswith("_") or path.suffix not in ("", ".py") or path.name == "py.typed":
            continue
        assert re.search(rf"\b{re.escape(path.stem)}\b", layout), f"{path.name} missing from README's Layout"
    for package in ("core", "sweep", "results", "bench"):
        for module in (REPO / "bnsweep" / package).glob("*.py"):
            if not module.name.startswith("_"):
                assert re.search(rf"\b{module.stem}\b", layout), f"{package}/{module.name} missing from Layout"


def test_project_never_points_at_files_users_do_not_have():
    for path in [REPO / "README.md", *REPO.glob("bnsweep/**/*.py"), *REPO.glob("sweeps/**/*.yaml"),
                 *REPO.glob("analysis/*.py")]:
        text = path.read_text()
        assert "../shared" not in text and "design.md" not in text and "notes/" not in text, path
