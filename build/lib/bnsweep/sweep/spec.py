"""Sweep files (YAML) -> validated stages, without importing Ray or torch.

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
    MAX_SEED,
    STAGE_INIT_PREFIX,
    TYPES,
    TrialConfig,
    make_config,
    parse_yaml,
    read_text,
)
from bnsweep.errors import ConfigError
from bnsweep.sweep.storage import LOCK_FILE, STATE_FILE, SWEEP_FILE

SETTING_KEYS = ("trial", "grid", "search", "num_samples", "search_alg", "scheduler", "metric", "mode",
                "resources", "max_concurrent", "max_failures", "checkpoints_to_keep", "seed")
TOP_KEYS = ("name", "description", "stages", "max_trials") + SETTING_KEYS
STAGE_KEYS = ("name", "match") + SETTING_KEYS
SEARCH_KINDS = ("loguniform", "uniform", "randint", "choice")
SEARCH_ALGS = ("grid", "optuna")
ASHA_KEYS = ("max_t", "grace_period", "reduction_factor")
METRIC_RE = re.compile(r"(final_)?(clean_acc|robust_acc)|robust_acc_eps[0-9.]+|train_loss|train_acc")
DEFAULT_MATCH = ("dataset", "model", "seed")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
MAX_NAME = 100  # characters: a directory name, with room under the file system's 255 bytes
# A stage is a directory beside bnsweep's own files: it may not be named like one (or like its
# temporary copy), on case-insensitive file systems either.
RESERVED_PREFIXES = tuple(f.casefold() for f in (SWEEP_FILE, STATE_FILE, LOCK_FILE)) + ("bnsweep",)
NOT_SEARCHED = ("init", "init_checkpoint")  # a stage's starting checkpoints are resolved per grid cell
MAX_SETTING = 100_000  # num_samples, failures, checkpoints, ASHA's epochs
MAX_RESOURCE = 1024  # CPUs or GPUs per trial (Ray leaves a trial no node can hold pending for ever)
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
        return math.prod(len(v) for v in self.grid.values())

    @property
    def num_trials(self) -> int:
        return self.num_cells * self.num_samples

    def values(self, key: str) -> list[Any]:
        """The values `key` takes in this stage's grid (its base value when it is not a dimension)."""
        return self.grid.get(key, [self.base[key]])

    def cells(self) -> Iterator[dict[str, Any]]:
        """Every grid combination as a full trial dict (sampled keys keep their base value), lazily."""
        for cell in self.combinations(self.grid):
            yield {**self.base, **cell}

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


@dataclass(frozen=True)
class StagePlan:
    """What a sweep file plans for one stage, read without validating its trials."""

    metric: str
    mode: str
    trials: int
    epochs: float  # of all its trials together (a sampled `epochs` counts at its `trial:` value)


def stage_plans(text: str, path: str) -> dict[str, StagePlan]:
    """{stage: StagePlan} in run order, read with the same rules as `parse_sweep` but without
    validating trials (results of an old sweep stay readable after its data or checkpoints moved)."""
    _, top, raw_stages = _document(parse_yaml(text, path), path)
    out = {}
    for raw in raw_stages:
        if isinstance(raw, Mapping) and isinstance(raw.get("name"), str):
            merged = _merge(top, raw)
            settings = _settings(merged, path)
            grid = {k: v for k, v in (merged.get("grid") or {}).items() if isinstance(v, list)}
            trials = math.prod(len(v) for v in grid.values()) * settings["num_samples"]
            epochs = [e for e in grid.get("epochs", [(merged.get("trial") or {}).get("epochs", TrialConfig.epochs)])
                      if isinstance(e, int)] or [TrialConfig.epochs]
            out[raw["name"]] = StagePlan(settings["metric"], settings["mode"], trials,
                                         trials * sum(epochs) / len(epochs))
    return out


def stage_objectives(text: str, path: str) -> dict[str, tuple[str, str]]:
    """{stage: (metric, mode)} in run order (see `stage_plans`)."""
    return {name: (plan.metric, plan.mode) for name, plan in stage_plans(text, path).items()}


def _document(doc: Any, path: str) -> tuple[Mapping[str, Any], dict[str, Any], list[Any]]:
    """The top level of a sweep file: (document, top-level settings, raw stages)."""
    if not isinstance(doc, Mapping):
        raise ConfigError("file", path, "a YAML mapping with trial:, grid:, stages: ...")
    _check_keys(doc, TOP_KEYS, path, "")
    top = {k: doc[k] for k in SETTING_KEYS if k in doc}
    raw_stages = doc.get("stages", [{"name": "main"}])
    if not isinstance(raw_stages, list) or not raw_stages:
        raise ConfigError("stages", raw_stages, "a non-empty list of stages, each with a name", path)
    return doc, top, raw_stages


def _parse(doc: Any, path: str, overrides: dict[str, Any]) -> Sweep:
    doc, top, raw_stages = _document(doc, path)
    for key in overrides:
        if key not in KEYS:
            raise ConfigError("--set", key, "trial keys: " + ", ".join(KEYS), path)
    name = check_name("name", doc.get("name", os.path.splitext(os.path.basename(path))[0]), path)
    max_trials = _positive_int(doc, "max_trials", DEFAULT_MAX_TRIALS, path, high=MAX_TRIALS)
    stages: list[Stage] = []
    wheres: list[str] = []
    for i, raw in enumerate(raw_stages):
        if not isinstance(raw, Mapping):
            raise ConfigError(f"stages[{i}]", raw, "a mapping with name:, trial:, grid:, ...", path)
        stage_name = raw.get("name")
        where = f"{path}: stage {stage_name!r}" if "stages" in doc else path
        check_name(f"stages[{i}].name", stage_name, path)
        if stage_name.casefold().startswith(RESERVED_PREFIXES):
            raise ConfigError(f"stages[{i}].name", stage_name, "a name that does not start like bnsweep's own "
                              f"files ({SWEEP_FILE}, {STATE_FILE}, {LOCK_FILE}, bnsweep*)", path)
        if stage_name.casefold() in [s.name.casefold() for s in stages]:
            raise ConfigError(f"stages[{i}].name", stage_name, "a name not used by another stage", path)
        _check_keys(raw, STAGE_KEYS, where, "")
        stages.append(_stage(stage_name, _override(_merge(top, raw), overrides, where), where))
        wheres.append(where)
    total = sum(stage.num_trials for stage in stages)
    if total > max_trials:
        raise ConfigError("trials", total, f"at most max_trials ({max_trials}) in all stages; raise the limit "
                          f"with a top-level `max_trials: {total}` in the sweep file, or shrink the grids", path)
    for i, (stage, where) in enumerate(zip(stages, wheres)):
        _check_cells(stage, where)
        _check_stage_init(stage, where, stages[:i])
    return Sweep(name=name, path=os.path.abspath(path), stages=tuple(stages), description=str(doc.get("description", "")))


def check_name(key: str, name: Any, where: str = "") -> str:
    """An experiment or stage name (the sweep file's or --name): it becomes one directory under the
    storage, so it is one path component, never `.`, `..` or a path, portable and not too long."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or len(name) > MAX_NAME:
        raise ConfigError(key, name, f"1 to {MAX_NAME} letters, digits, '_', '.', '-', starting with a letter "
                          "or digit", where)
    return name


def _merge(top: Mapping[str, Any], stage: Mapping[str, Any]) -> dict[str, Any]:
    """Stage settings override the file's; trial, grid and search merge key by key."""
    merged = {**top, **stage}
    for key in ("trial", "grid", "search"):
        for part in (top.get(key), stage.get(key)):
            if part is not None and not isinstance(part, Mapping):
                raise ConfigError(key, part, "a mapping of trial keys", "")
        if key in top or key in stage:
            merged[key] = {**(top.get(key) or {}), **(stage.get(key) or {})}
    return merged


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


def _check_keys(raw: Mapping[str, Any], allowed: tuple[str, ...], where: str, prefix: str) -> None:
    for key in raw:
        if key not in allowed:
            raise ConfigError("key", f"{prefix}{key}", ", ".join(allowed), where)


def _stage(name: str, raw: Mapping[str, Any], where: str) -> Stage:
    """A stage with every key, value and setting checked on its own (cells are checked later)."""
    trial = raw.get("trial") or {}
    if not isinstance(trial, Mapping):
        raise ConfigError("trial", trial, "a mapping of trial keys", where)
    base = _config(trial, where, "trial").to_dict()
    grid = _grid(raw, base, where)
    search = _search(raw, base, grid, where)
    settings = _settings(raw, where)
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
        raise ConfigError("search", search, "a mapping of trial keys to {loguniform|uniform|randint|choice: ...}", where)
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
               "tuple[float, ...]": "a list of radii"}


def _positive_int(raw: Mapping[str, Any], key: str, default: Any, where: str, low: int = 1,
                  high: int = MAX_SETTING) -> Any:
    value = raw.get(key, default)
    if value is default and default is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(key, value, f"an integer >= {low} and <= {high}", where)
    return value


def _settings(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    metric = raw.get("metric", "robust_acc")
    if not isinstance(metric, str) or not METRIC_RE.fullmatch(metric):
        raise ConfigError("metric", metric, "clean_acc, robust_acc, robust_acc_epsE, final_clean_acc, "
                          "final_robust_acc, train_loss, train_acc", where)
    mode = raw.get("mode", "max")
    if mode not in ("max", "min"):
        raise ConfigError("mode", mode, "max, min", where)
    search_alg = raw.get("search_alg", "grid")
    if search_alg not in SEARCH_ALGS:
        raise ConfigError("search_alg", search_alg, ", ".join(SEARCH_ALGS), where)
    match = raw.get("match", list(DEFAULT_MATCH))
    if not isinstance(match, list) or not match or not all(k in KEYS for k in match):
        raise ConfigError("match", match, "a non-empty list of trial keys, e.g. [dataset, model, seed]", where)
    return {"num_samples": _positive_int(raw, "num_samples", 1, where), "search_alg": search_alg,
            "scheduler": _scheduler(raw.get("scheduler", "fifo"), where), "metric": metric, "mode": mode,
            "resources": _resources(raw.get("resources", {}), where),
            "max_concurrent": _positive_int(raw, "max_concurrent", None, where),
            "max_failures": _positive_int(raw, "max_failures", 2, where, low=0),
            "checkpoints_to_keep": _positive_int(raw, "checkpoints_to_keep", 2, where),
            "seed": _positive_int(raw, "seed", 0, where, low=0, high=MAX_SEED), "match": tuple(match)}


def _scheduler(value: Any, where: str) -> Any:
    allowed = "fifo or {asha: {max_t: N, grace_period: N, reduction_factor: N}}"
    if value == "fifo":
        return value
    if not isinstance(value, Mapping) or list(value) != ["asha"]:
        raise ConfigError("scheduler", value, allowed, where)
    args = value["asha"] or {}
    if not isinstance(args, Mapping):
        raise ConfigError("scheduler.asha", args, allowed, where)
    for key, arg in args.items():
        if key not in ASHA_KEYS:
            raise ConfigError("scheduler.asha", key, ", ".join(ASHA_KEYS), where)
        low = 2 if key == "reduction_factor" else 1
        if not isinstance(arg, int) or isinstance(arg, bool) or not low <= arg <= MAX_SETTING:
            raise ConfigError(f"scheduler.asha.{key}", arg, f"an integer >= {low} and <= {MAX_SETTING}", where)
    return {"asha": dict(args)}


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


def _resources(value: Any, where: str) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise ConfigError("resources", value, "{cpu: N, gpu: F}", where)
    for key in value:
        if key not in ("cpu", "gpu"):
            raise ConfigError("resources", key, "cpu, gpu", where)
    cpu, gpu = value.get("cpu", 1), value.get("gpu", 0)
    if not _finite(cpu) or not 0 < cpu <= MAX_RESOURCE:
        raise ConfigError("resources.cpu", cpu, f"a number > 0 and <= {MAX_RESOURCE}", where)
    if not _finite(gpu) or not 0 <= gpu <= MAX_RESOURCE or (gpu > 1 and gpu != int(gpu)):
        raise ConfigError("resources.gpu", gpu, "0, a fraction in (0, 1], or a whole number of GPUs", where)
    return {"cpu": cpu, "gpu": gpu}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


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
