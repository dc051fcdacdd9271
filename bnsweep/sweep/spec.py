"""Sweep files (YAML) -> validated stages, without importing Ray. The module loads without torch too;
validating a trial imports it, to check its model's size and trainable set on the meta device (no
weights, no data).

Every trial a stage can produce is validated here, so a typo in a sweep that would run for days
stops at once with one line naming the file, the stage, the key and what is allowed. Grids are
counted, never built: a sweep above `max_trials` is refused before any cell is looked at, and a
grid larger than EXHAUSTIVE_CELLS (allowed by a raised `max_trials`) is validated value by value,
for every combination within each group of keys that constrain one another, and on a sample of cells.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping

from bnsweep.core.config import (
    KEY_GROUPS,
    KEYS,
    STAGE_INIT_PREFIX,
    TYPES,
    TrialConfig,
    make_config,
)
from bnsweep.core.yamlfile import parse_yaml, read_text
from bnsweep.errors import ConfigError
from bnsweep.layout.paths import LOCK_FILE, STATE_FILE, SWEEP_FILE
from bnsweep.layout.plans import (
    DEFAULT_MATCH,
    STAGE_KEYS,
    bounded_int,
    check_keys,
    document,
    merge,
    stage_settings,
)

SEARCH_KINDS = ("loguniform", "uniform", "randint", "choice")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
MAX_NAME = 100  # characters: a directory name, with room under the file system's 255 bytes
# A stage is a directory beside bnsweep's own files: it may not be named like one (or like its
# temporary copy), on case-insensitive file systems either.
RESERVED_PREFIXES = tuple(f.casefold() for f in (SWEEP_FILE, STATE_FILE, LOCK_FILE)) + ("bnsweep",)
NOT_SEARCHED = ("init", "init_checkpoint")  # a stage's starting checkpoints are resolved per grid cell
DEFAULT_MAX_TRIALS = 10_000  # in all stages; a sweep file's top-level `max_trials:` raises it
MAX_TRIALS = 10**12  # the most `max_trials:` may allow (grids are counted, never built)
EXHAUSTIVE_CELLS = 10_000  # grids up to this size have every cell validated
SAMPLED_CELLS = 1_000  # cells of a larger grid validated as a safety net, besides values and key groups


@dataclass(frozen=True)
class Stage:
    """One block of trials run by one Ray Tune experiment."""

    name: str
    base: dict[str, Any]  # resolved trial keys (every key of TrialConfig)
    grid: dict[str, list[Any]]  # full-factorial dimensions
    search: dict[str, dict[str, Any]]  # sampled dimensions: {kind: args}
    num_samples: int = 1
    search_alg: str = "grid"
    scheduler: Any = "fifo"  # "fifo" or {"asha": {...}}
    metric: str = "robust_acc"
    mode: str = "max"
    resources: dict[str, float] = field(default_factory=lambda: {"cpu": 1, "gpu": 0})
    max_concurrent: int | None = None
    max_failures: int = 2
    checkpoints_to_keep: int = 2
    seed: int = 0
    match: tuple[str, ...] = DEFAULT_MATCH

    @property
    def num_cells(self) -> int:
        """Grid cells: the product of the grid dimensions' lengths (counted, never built)."""
        return math.prod(len(v) for v in self.grid.values())

    @property
    def num_trials(self) -> int:
        """Trials the stage runs: cells x num_samples."""
        return self.num_cells * self.num_samples

    def values(self, key: str) -> list[Any]:
        """The values `key` takes in this stage's grid (its base value when it is not a dimension)."""
        return self.grid.get(key, [self.base[key]])

    def combinations(self, keys: Iterable[str]) -> Iterator[dict[str, Any]]:
        """Every combination of `keys`' values, as {key: value}: the grid projected onto `keys`.
        Each combination stands for the same number of cells (the other dimensions' product)."""
        keys = list(dict.fromkeys(keys))
        for combo in itertools.product(*(self.values(k) for k in keys)):
            yield dict(zip(keys, combo))

    @property
    def from_stage(self) -> str | None:
        """The earlier stage this stage's trials start from, if any."""
        stages = {i[len(STAGE_INIT_PREFIX):] for i in self.values("init") if i.startswith(STAGE_INIT_PREFIX)}
        return stages.pop() if stages else None


@dataclass(frozen=True)
class Sweep:
    """A validated sweep file: its stages in run order, and what is stored with the experiment."""
    name: str
    path: str
    stages: tuple[Stage, ...]
    description: str = ""
    text: str = ""  # the file as written, stored with the experiment
    overrides: dict[str, Any] = field(default_factory=dict)  # `--set` trial keys, stored with it too


def load_sweep(path: str, overrides: Mapping[str, Any] | None = None) -> Sweep:
    """Parse and validate a sweep file; raises ConfigError naming file, stage and key."""
    return parse_sweep(read_text(path), path, overrides)


def parse_sweep(text: str, path: str, overrides: Mapping[str, Any] | None = None) -> Sweep:
    """Parse and validate a sweep file's text (`path` names it in errors and in `Sweep.path`).

    `overrides` (``bnsweep run FILE --set KEY=VALUE``) are trial keys set in every stage, on top of
    each stage's `trial:`; a key that a stage's `grid:` or `search:` varies is refused.
    """
    overrides = dict(overrides or {})
    sweep = _parse(parse_yaml(text, path), path, overrides)
    return dataclasses.replace(sweep, text=text, overrides=overrides)


def _parse(doc: Any, path: str, overrides: dict[str, Any]) -> Sweep:
    doc, top, raw_stages = document(doc, path)
    for key in overrides:
        if key not in KEYS:
            raise ConfigError("--set", key, "trial keys: " + ", ".join(KEYS), path)
    name = check_name("name", doc.get("name", os.path.splitext(os.path.basename(path))[0]), path)
    max_trials = bounded_int(doc, "max_trials", DEFAULT_MAX_TRIALS, path, high=MAX_TRIALS)
    stages: list[Stage] = []
    wheres: list[str] = []
    for i, raw in enumerate(raw_stages):
        if not isinstance(raw, Mapping):
            raise ConfigError(f"stages[{i}]", raw, "a mapping with name:, trial:, grid:, ...", path)
        where = f"{path}: stage {raw.get('name')!r}" if "stages" in doc else path
        stage_name = check_name(f"stages[{i}].name", raw.get("name"), path)
        if stage_name.casefold().startswith(RESERVED_PREFIXES):
            raise ConfigError(f"stages[{i}].name", stage_name, "a name that does not start like bnsweep's own "
                              f"files ({SWEEP_FILE}, {STATE_FILE}, {LOCK_FILE}, bnsweep*)", path)
        if stage_name.casefold() in [s.name.casefold() for s in stages]:
            raise ConfigError(f"stages[{i}].name", stage_name, "a name not used by another stage", path)
        check_keys(raw, STAGE_KEYS, where, "")
        stages.append(_stage(stage_name, _override(merge(top, raw), overrides, where), where))
        wheres.append(where)
    total = sum(stage.num_trials for stage in stages)
    if total > max_trials:
        raise ConfigError("trials", total, f"at most max_trials ({max_trials}) in all stages; raise the limit "
                          f"with a top-level `max_trials: {total}` in the sweep file, or shrink the grids", path)
    for i, (stage, where) in enumerate(zip(stages, wheres)):
        _check_cells(stage, where)
        _check_stage_init(stage, where, stages[:i])
    return Sweep(name=name, path=os.path.abspath(path), stages=tuple(stages),
                 description=str(doc.get("description", "")))


def check_name(key: str, name: Any, where: str = "") -> str:
    """An experiment or stage name (the sweep file's or --name): it becomes one directory under the
    storage, so it is one path component, never `.`, `..` or a path, portable and not too long."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or len(name) > MAX_NAME:
        raise ConfigError(key, name, f"1 to {MAX_NAME} letters, digits, '_', '.', '-', starting with a letter "
                          "or digit", where)
    return name


def _override(merged: dict[str, Any], overrides: dict[str, Any], where: str) -> dict[str, Any]:
    """A stage's merged settings with `overrides` on top of its `trial:`."""
    if not overrides:
        return merged
    for part in ("grid", "search"):
        varied = [key for key in overrides if key in (merged.get(part) or {})]
        if varied:
            raise ConfigError("--set", f"{varied[0]}={overrides[varied[0]]}", f"keys the stage does not vary "
                              f"(its {part}: varies {varied[0]}; edit the sweep file instead)", where)
    return {**merged, "trial": {**(merged.get("trial") or {}), **overrides}}


def _stage(name: str, raw: Mapping[str, Any], where: str) -> Stage:
    """A stage with every key, value and setting checked on its own (cells are checked later)."""
    trial = raw.get("trial") or {}
    if not isinstance(trial, Mapping):
        raise ConfigError("trial", trial, "a mapping of trial keys", where)
    base = _config(trial, where, "trial").to_dict()
    grid = _grid(raw, base, where)
    search = _search(raw, base, grid, where)
    settings = stage_settings(raw, where)
    stage = Stage(name=name, base=base, grid=grid, search=search, **settings)
    _check_scheduler(stage, where)
    if stage.search_alg == "optuna" and (not search or grid):
        raise ConfigError("search_alg", "optuna", "optuna with search: dimensions only; list grid dimensions "
                          "as search: {KEY: {choice: [...]}} or use search_alg: grid", where)
    return stage


def _check_cells(stage: Stage, where: str) -> None:
    """Validate the stage's trials as combinations of values (each value alone passed in _grid).

    A grid of up to EXHAUSTIVE_CELLS cells: every cell. A larger one: for each group of keys that
    make_config checks together (KEY_GROUPS), every combination of the group's values, plus
    SAMPLED_CELLS random cells; it is never built.
    """
    part = "grid" if stage.grid else "trial"
    base = _config(stage.base, where, "trial")
    if stage.num_cells <= EXHAUSTIVE_CELLS:
        cells: Iterable[dict[str, Any]] = stage.combinations(stage.grid)
    else:
        rng = random.Random(stage.seed)
        sample = ({k: rng.choice(v) for k, v in stage.grid.items()} for _ in range(SAMPLED_CELLS))
        groups = (stage.combinations(k for k in group if k in stage.grid) for group in KEY_GROUPS)
        cells = itertools.chain(*groups, sample)
    for cell in cells:
        _config(cell, where, part, base)


def _config(values: Mapping[str, Any], where: str, part: str, base: TrialConfig | None = None) -> TrialConfig:
    try:
        return make_config(values, where=where, base=base)
    except ConfigError as err:
        key = err.key if err.key == "key" else f"{part}.{err.key}"
        raise ConfigError(key, err.value, err.allowed, where) from None


def _grid(raw: Mapping[str, Any], base: dict[str, Any], where: str) -> dict[str, list[Any]]:
    grid = raw.get("grid")
    if grid is None:
        return {}
    if not isinstance(grid, Mapping) or not grid:
        raise ConfigError("grid", grid, "a mapping of trial keys to non-empty lists (omit grid: for one trial)", where)
    out = {}
    for key, values in grid.items():
        if key not in KEYS:
            raise ConfigError("grid", key, "trial keys: " + ", ".join(KEYS), where)
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid.{key}", values, "a non-empty list of values", where)
        out[key] = [_config({**base, key: v}, where, "grid").to_dict()[key] for v in values]
    return out


def _search(raw: Mapping[str, Any], base: dict[str, Any], grid: Mapping[str, Any], where: str) -> dict[str, Any]:
    search = raw.get("search") or {}
    if not isinstance(search, Mapping):
        raise ConfigError("search", search, "a mapping of trial keys to {loguniform|uniform|randint|choice: ...}",
                          where)
    out = {}
    for key, spec in search.items():
        if key not in KEYS or key in grid:
            raise ConfigError("search", key, "trial keys not also in grid: " + ", ".join(KEYS), where)
        if key in NOT_SEARCHED:
            raise ConfigError("search", key, "keys other than init (list starting points under grid:, whose "
                              "cells each find their checkpoint)", where)
        allowed = "{loguniform: [low, high]}, {uniform: [low, high]}, {randint: [low, high]} or {choice: [...]}"
        if not isinstance(spec, Mapping) or len(spec) != 1 or next(iter(spec)) not in SEARCH_KINDS:
            raise ConfigError(f"search.{key}", spec, allowed, where)
        kind, values = next(iter(spec.items()))
        if kind == "choice":
            if not isinstance(values, list) or not values:
                raise ConfigError(f"search.{key}", spec, "choice: a non-empty list", where)
        else:
            _check_sampler(key, kind, values, spec, where)
        out[key] = {kind: [_config({**base, key: v}, where, "search").to_dict()[key] for v in values]}
    return out


def _check_sampler(key: str, kind: str, args: Any, spec: Any, where: str) -> None:
    """A range sampler must draw values of the key's type: floats (uniform, loguniform) for float keys,
    integers (randint) for integer or float keys; every other key is searched with choice."""
    sampled = ("float",) if kind in ("uniform", "loguniform") else ("int", "float")
    if TYPES[key] not in sampled:
        kinds = "randint or choice" if TYPES[key] == "int" else "choice"
        raise ConfigError(f"search.{key}", spec, f"{kinds} ({key} is {_KIND_NAMES[TYPES[key]]}; {kind} "
                          f"draws {'integers' if kind == 'randint' else 'floats'})", where)
    number = int if kind == "randint" else (int, float)
    if (not isinstance(args, list) or len(args) != 2
            or not all(isinstance(a, number) and not isinstance(a, bool) for a in args)
            or not args[0] < args[1] or (kind == "loguniform" and args[0] <= 0)):
        raise ConfigError(f"search.{key}", spec, f"{kind}: [low, high] with low < high"
                          + (" and low > 0" if kind == "loguniform" else "")
                          + (", both integers" if kind == "randint" else ""), where)


_KIND_NAMES = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
               "bool | str": "true, false or auto",
               "tuple[float, ...]": "a list of radii"}


def _check_scheduler(stage: Stage, where: str) -> None:
    """ASHA stops trials at rungs from grace_period up to max_t epochs (default: the stage's epochs),
    comparing the metric each epoch: a grace period past max_t, or a metric reported only at the end,
    leaves it nothing to compare."""
    if not isinstance(stage.scheduler, dict):
        return
    asha = stage.scheduler["asha"]
    max_t = asha.get("max_t", stage.base["epochs"])
    grace = asha.get("grace_period", 1)
    if grace > max_t:
        source = "max_t" if "max_t" in asha else "the stage's epochs"
        raise ConfigError("scheduler.asha.grace_period", grace, f"an integer <= {max_t} ({source})", where)
    if stage.metric.startswith("final_"):
        raise ConfigError("metric", stage.metric, "a metric reported every epoch (clean_acc, robust_acc, "
                          "robust_acc_epsE, train_loss, train_acc) with scheduler: asha", where)
    evaluated = stage.metric not in ("train_loss", "train_acc")
    every = [stage.base["eval_every"], *stage.grid.get("eval_every", []), *stage.search.get("eval_every", {}).values()]
    if evaluated and any(v != 1 for v in every):
        raise ConfigError("eval_every", next(v for v in every if v != 1),
                          f"1 with scheduler: asha and metric {stage.metric} (ASHA compares it every epoch)", where)


def _check_stage_init(stage: Stage, where: str, earlier: list[Stage]) -> None:
    """Every `from_stage` trial must match exactly one trial of an earlier stage on `match` keys.

    Only the projections of the grids onto `init` and the match keys are enumerated."""
    names = [s.name for s in earlier]
    found_in: dict[str, Counter] = {}
    for cell in stage.combinations(["init", *stage.match]):
        source_name = TrialConfig(init=cell["init"]).stage_init
        if source_name is None:
            continue
        if source_name not in names:
            raise ConfigError("init", {"from_stage": source_name},
                              "{from_stage: NAME} naming an earlier stage: " + (", ".join(names) or "(none)"), where)
        source = earlier[names.index(source_name)]
        sampled = [k for k in stage.match if k in source.search or k in stage.search]
        if sampled or source.num_samples != 1:
            raise ConfigError("match", list(stage.match), "keys fixed by trial:/grid: in both stages, and "
                              f"num_samples: 1 in stage {source_name!r}", where)
        if source_name not in found_in:  # source cells per match key: the projection's count x the rest
            rest = math.prod(len(v) for k, v in source.grid.items() if k not in stage.match)
            found_in[source_name] = Counter({k: n * rest for k, n in Counter(
                match_key(c, stage.match) for c in source.combinations(stage.match)).items()})
        key = match_key(cell, stage.match)
        found = found_in[source_name][key]
        if found != 1:
            want = ", ".join(f"{k}={v}" for k, v in zip(stage.match, key))
            problem = "none" if not found else f"{found}"
            raise ConfigError("init", {"from_stage": source_name}, f"a stage with exactly one trial matching "
                              f"{want} ({problem} found; adjust match: or the grids)", where)


def match_key(config: Mapping[str, Any], match: tuple[str, ...]) -> tuple:
    """The values a later stage's trial is matched on, hashable (lists become tuples)."""
    return tuple(tuple(config[k]) if isinstance(config[k], list) else config[k] for k in match)


def checkpoint_key(init: str, match: tuple[str, ...], config: Mapping[str, Any]) -> str:
    """How a trial with `init` "from_stage:NAME", matched on `match`, finds the checkpoint of the trial
    of stage NAME with `config`: the same string from both sides (it keys the state file's lookups)."""
    return json.dumps([init, list(match), *match_key(config, match)])


def consumer_matches(sweep: Sweep, source: str) -> set[tuple[str, ...]]:
    """The `match:` lists of the stages that start from stage `source`."""
    return {stage.match for stage in sweep.stages if STAGE_INIT_PREFIX + source in stage.values("init")}
