"""bnsweep's state file, `bnsweep_state.json`: which stages finished, the checkpoints later stages
start from, and digests of the sweep file and `--set` keys the experiment started with.

One reader for every command (`run`, `resume`, `status`, `prune`, `results`, `record`): a file that
does not read as bnsweep writes it is one DataError naming it, never a traceback. The file carries
its `format` number; a file without one is format 1 (written before the number existed), one with a
newer number than this bnsweep knows is refused rather than misread.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from bnsweep.errors import DataError
from bnsweep.layout.paths import STATE_FILE, read_text, write_text

STATE_FORMAT = 1  # the layout of bnsweep_state.json written now; raise it with any change readers must know


def sweep_digest(text: str) -> str:
    """What the state file records of the sweep file as run, to notice edits."""
    return hashlib.sha256(text.encode()).hexdigest()


def new_state(sweep_text: str, overrides_text: str, command: str | None = None) -> dict[str, Any]:
    """The state of an experiment just started: no stage finished yet."""
    return {"format": STATE_FORMAT, "sweep_sha256": sweep_digest(sweep_text),
            "overrides_sha256": sweep_digest(overrides_text), "stages": {},
            **({"command": command} if command else {})}


def write_state(root: str, state: dict[str, Any]) -> None:
    """Write the state file whole or not at all (see `paths.write_text`)."""
    write_text(f"{root}/{STATE_FILE}", json.dumps(state, indent=2))


def load_state(root: str) -> dict[str, Any]:
    """The state file ({"format", "stages": {name: {finished, trials, checkpoints}}, "sweep_sha256",
    "overrides_sha256", "command"}), checked: a damaged one is a DataError naming it. A missing file
    reads as an experiment with no stage finished."""
    uri = f"{root}/{STATE_FILE}"
    text = read_text(uri)
    if text is None:
        return {"format": STATE_FORMAT, "stages": {}}
    try:
        state = json.loads(text)
    except ValueError:
        state = None
    if isinstance(state, dict) and _newer(state.get("format", 1)):
        raise DataError(f"{uri}: written by a newer bnsweep (state format {state['format']}; this one reads "
                        f"formats up to {STATE_FORMAT}); allowed: a state file of format <= {STATE_FORMAT} "
                        "(upgrade bnsweep to read this experiment)")
    if not _valid_state(state):
        raise DataError(f"{uri}: damaged (not the JSON bnsweep writes); allowed: the file as bnsweep wrote it "
                        "(restore it from a copy, or delete it: resume then reads finished stages back "
                        "from their Ray Tune experiments)")
    return {"format": 1, **state}


def _newer(version: Any) -> bool:
    return isinstance(version, int) and not isinstance(version, bool) and version > STATE_FORMAT


def _valid_state(state: Any) -> bool:
    if not isinstance(state, dict) or not isinstance(state.get("stages"), dict):
        return False
    version = state.get("format", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        return False
    if not all(isinstance(state.get(key, ""), str) for key in ("sweep_sha256", "overrides_sha256", "command")):
        return False
    return all(isinstance(stage, dict) and isinstance(stage.get("finished"), bool)
               and isinstance(stage.get("checkpoints"), dict)
               and all(isinstance(k, str) and isinstance(v, str) for k, v in stage["checkpoints"].items())
               for stage in state["stages"].values())
