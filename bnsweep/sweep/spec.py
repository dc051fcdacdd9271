"""Sweep files (YAML) -> validated stages, without importing Ray or torch.

Every trial a stage can produce is validated here, so a typo in a sweep that would run for days
stops at once with one line naming the file, the stage, the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from bnsweep.core import folder
from bnsweep.core.config import KEYS, STAGE_INIT_PREFIX, TrialConfig, make_config, parse_yaml, read_text
from bnsweep.errors import ConfigError, DataError

SETTING_KEYS = ("trial", "grid", "search", "num_samples", "search_alg", "scheduler", "metric", "mode",
                "resources", "max_concurrent", "max_failures", "checkpoints_to_keep", "seed")
TOP_KEYS = ("name", "description", "stages") + SETTING_KEYS
STAGE_KEYS = ("name", "match") + SETTING_KEYS
SEARCH_KINDS = ("loguniform", "uniform", "randint", "choice")
SEARCH_ALGS = ("grid", "optuna")
ASHA_KEYS = ("max_t", "grace_period", "reduction_factor")
METRIC_RE = re.compile(r"(final_)?(clean_acc|robust_acc)|robust_acc_eps[0-9.]+|train_loss|train_acc")
DEFAULT_MATCH = ("dataset", "model", "seed")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


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
    def num_trials(self) -> int:
        return math.prod(len(v) for v in self.grid.values()) * self.num_samples

    def cells(self) -> list[dict[str, Any]]:
        """Every grid combination as a full trial dict (sampled keys keep their base value)."""
        keys = list(self.grid)
        return [{**self.base, **dict(zip(keys, combo))} for combo in itertools.product(*self.grid.values())]

    @property
    def from_stage(self) -> str | None:
        """The earlier stage this stage's trials start from, if any."""
        inits = {cell["init"] for cell in self.cells()}
        stages = {i[len(STAGE_INIT_PREFIX):] for i in inits if i.startswith(STAGE_INIT_PREFIX)}
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


def stage_objectives(text: str, path: str) -> dict[str, tuple[str, str]]:
    """{stage: (metric, mode)} in run order, read with the same rules as `parse_sweep` but without
    validating trials (results of an old sweep stay readable after its data or checkpoints moved)."""
    doc, top, raw_stages = _document(parse_yaml(text, path), path)
    out = {}
    for raw in raw_stages:
        if isinstance(raw, Mapping) and isinstance(raw.get("name"), str):
            settings = _settings(_merge(top, raw), path)
            out[raw["name"]] = (settings["metric"], settings["mode"])
    return out


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
    name = doc.get("name", os.path.splitext(os.path.basename(path))[0])
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ConfigError("name", name, "letters, digits, '_', '.', '-'", path)
    stages: list[Stage] = []
    for i, raw in enumerate(raw_stages):
        if not isinstance(raw, Mapping):
            raise ConfigError(f"stages[{i}]", raw, "a mapping with name:, trial:, grid:, ...", path)
        stage_name = raw.get("name")
        where = f"{path}: stage {stage_name!r}" if "stages" in doc else path
        if not isinstance(stage_name, str) or not NAME_RE.fullmatch(stage_name):
            raise ConfigError(f"stages[{i}].name", stage_name, "letters, digits, '_', '.', '-'", path)
        if stage_name in [s.name for s in stages]:
            raise ConfigError(f"stages[{i}].name", stage_name, "a name not used by another stage", path)
        _check_keys(raw, STAGE_KEYS, where, "")
        stages.append(_stage(stage_name, _override(_merge(top, raw), overrides, where), where, stages))
    _check_folders(stages, path, "stages" in doc)
    return Sweep(name=name, path=os.path.abspath(path), stages=tuple(stages), description=str(doc.get("description", "")))


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


def _stage(name: str, raw: Mapping[str, Any], where: str, earlier: list[Stage]) -> Stage:
    trial = raw.get("trial") or {}
    if not isinstance(trial, Mapping):
        raise ConfigError("trial", trial, "a mapping of trial keys", where)
    base = _config(trial, where, "trial").to_dict()
    grid = _grid(raw, base, where)
    search = _search(raw, base, grid, where)
    settings = _settings(raw, where)
    stage = Stage(name=name, base=base, grid=grid, search=search, **settings)
    if stage.search_alg == "optuna" and (not search or grid):
        raise ConfigError("search_alg", "optuna", "optuna with search: dimensions only; list grid dimensions "
                          "as search: {KEY: {choice: [...]}} or use search_alg: grid", where)
    for cell in stage.cells():
        _config(cell, where, "grid" if grid else "trial")
    _check_stage_init(stage, where, earlier)
    return stage


def _check_folders(stages: list[Stage], path: str, named: bool) -> None:
    """Folder data sets exist, are laid out right and hold the subsets asked for; each source is
    listed once (listing a .tar.gz decompresses it)."""
    seen: dict[str, folder.Inventory] = {}
    for stage in stages:
        where = f"{path}: stage {stage.name!r}" if named else path
        for cell in stage.cells():
            if cell["dataset"] == "folder":
                source = cell["data_dir"]
                if source not in seen:
                    try:
                        seen[source] = folder.inventory(source)
                    except DataError as err:
                        raise DataError(f"{where}: {err}") from None
                folder.check_sizes(seen[source], source, cell["n_train"], cell["n_test"], where)


def _config(values: Mapping[str, Any], where: str, part: str) -> TrialConfig:
    try:
        return make_config(values, where=where)
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
        allowed = "{loguniform: [low, high]}, {uniform: [low, high]}, {randint: [low, high]} or {choice: [...]}"
        if not isinstance(spec, Mapping) or len(spec) != 1 or next(iter(spec)) not in SEARCH_KINDS:
            raise ConfigError(f"search.{key}", spec, allowed, where)
        kind, args = next(iter(spec.items()))
        if kind == "choice":
            if not isinstance(args, list) or not args:
                raise ConfigError(f"search.{key}", spec, "choice: a non-empty list", where)
            values = args
        else:
            if (not isinstance(args, list) or len(args) != 2
                    or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)
                    or not args[0] < args[1] or (kind == "loguniform" and args[0] <= 0)
                    or (kind == "randint" and not all(isinstance(a, int) for a in args))):
                raise ConfigError(f"search.{key}", spec, f"{kind}: [low, high] with low < high"
                                  + (" and low > 0" if kind == "loguniform" else ""), where)
            values = args
        out[key] = {kind: [_config({**base, key: v}, where, "search").to_dict()[key] for v in values]}
    return out


def _positive_int(raw: Mapping[str, Any], key: str, default: Any, where: str, low: int = 1) -> Any:
    value = raw.get(key, default)
    if value is default and default is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(key, value, f"an integer >= {low}", where)
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
            "seed": _positive_int(raw, "seed", 0, where, low=0), "match": tuple(match)}


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
        if not isinstance(arg, int) or isinstance(arg, bool) or arg < (2 if key == "reduction_factor" else 1):
            raise ConfigError(f"scheduler.asha.{key}", arg, "an integer >= 1 (reduction_factor >= 2)", where)
    return {"asha": dict(args)}


def _resources(value: Any, where: str) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise ConfigError("resources", value, "{cpu: N, gpu: F}", where)
    for key in value:
        if key not in ("cpu", "gpu"):
            raise ConfigError("resources", key, "cpu, gpu", where)
    cpu, gpu = value.get("cpu", 1), value.get("gpu", 0)
    if not isinstance(cpu, (int, float)) or isinstance(cpu, bool) or cpu <= 0:
        raise ConfigError("resources.cpu", cpu, "a number > 0", where)
    if (not isinstance(gpu, (int, float)) or isinstance(gpu, bool) or gpu < 0
            or (gpu > 1 and gpu != int(gpu))):
        raise ConfigError("resources.gpu", gpu, "0, a fraction in (0, 1], or a whole number of GPUs", where)
    return {"cpu": cpu, "gpu": gpu}


def _check_stage_init(stage: Stage, where: str, earlier: list[Stage]) -> None:
    """Every `from_stage` trial must match exactly one trial of an earlier stage on `match` keys."""
    names = [s.name for s in earlier]
    for cell in stage.cells():
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
        key = match_key(cell, stage.match)
        found = [c for c in source.cells() if match_key(c, stage.match) == key]
        if len(found) != 1:
            want = ", ".join(f"{k}={v}" for k, v in zip(stage.match, key))
            problem = "none" if not found else f"{len(found)}"
            raise ConfigError("init", {"from_stage": source_name}, f"a stage with exactly one trial matching "
                              f"{want} ({problem} found; adjust match: or the grids)", where)


def match_key(config: Mapping[str, Any], match: tuple[str, ...]) -> tuple:
    """The values a later stage's trial is matched on, hashable (lists become tuples)."""
    return tuple(tuple(config[k]) if isinstance(config[k], list) else config[k] for k in match)
