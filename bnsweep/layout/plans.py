"""What a sweep file sets beside its trials (stage names, metric and mode, search, scheduler,
resources), and what it plans per stage, read without validating trials: `status` and `results`
read an old sweep's plans after its data or checkpoints moved, and `sweep.spec` validates the rest.
Imports neither Ray nor torch.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

from bnsweep.core.config import KEYS, MAX_SEED, TrialConfig
from bnsweep.core.yamlfile import parse_yaml
from bnsweep.errors import ConfigError

SETTING_KEYS = ("trial", "grid", "search", "num_samples", "search_alg", "scheduler", "metric", "mode",
                "resources", "max_concurrent", "max_failures", "checkpoints_to_keep", "seed")
TOP_KEYS = ("name", "description", "stages", "max_trials") + SETTING_KEYS
STAGE_KEYS = ("name", "match") + SETTING_KEYS
SEARCH_ALGS = ("grid", "optuna")
ASHA_KEYS = ("max_t", "grace_period", "reduction_factor")
METRIC_RE = re.compile(r"(final_)?(clean_acc|robust_acc)|robust_acc_eps[0-9.]+|train_loss|train_acc")
DEFAULT_MATCH = ("dataset", "model", "seed")
MAX_SETTING = 100_000  # num_samples, failures, checkpoints, ASHA's epochs
MAX_RESOURCE = 1024  # CPUs or GPUs per trial (Ray leaves a trial no node can hold pending for ever)


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
    _, top, raw_stages = document(parse_yaml(text, path), path)
    out = {}
    for raw in raw_stages:
        if isinstance(raw, Mapping) and isinstance(raw.get("name"), str):
            merged = merge(top, raw)
            settings = stage_settings(merged, path)
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


def document(doc: Any, path: str) -> tuple[Mapping[str, Any], dict[str, Any], list[Any]]:
    """The top level of a sweep file: (document, top-level settings, raw stages)."""
    if not isinstance(doc, Mapping):
        raise ConfigError("file", path, "a YAML mapping with trial:, grid:, stages: ...")
    check_keys(doc, TOP_KEYS, path, "")
    top = {k: doc[k] for k in SETTING_KEYS if k in doc}
    raw_stages = doc.get("stages", [{"name": "main"}])
    if not isinstance(raw_stages, list) or not raw_stages:
        raise ConfigError("stages", raw_stages, "a non-empty list of stages, each with a name", path)
    return doc, top, raw_stages


def merge(top: Mapping[str, Any], stage: Mapping[str, Any]) -> dict[str, Any]:
    """Stage settings override the file's; trial, grid and search merge key by key."""
    merged = {**top, **stage}
    for key in ("trial", "grid", "search"):
        for part in (top.get(key), stage.get(key)):
            if part is not None and not isinstance(part, Mapping):
                raise ConfigError(key, part, "a mapping of trial keys", "")
        if key in top or key in stage:
            merged[key] = {**(top.get(key) or {}), **(stage.get(key) or {})}
    return merged


def check_keys(raw: Mapping[str, Any], allowed: tuple[str, ...], where: str, prefix: str) -> None:
    """Refuse a key of `raw` that is not in `allowed` (ConfigError naming it)."""
    for key in raw:
        if key not in allowed:
            raise ConfigError("key", f"{prefix}{key}", ", ".join(allowed), where)


def bounded_int(raw: Mapping[str, Any], key: str, default: Any, where: str, low: int = 1,
                  high: int = MAX_SETTING) -> Any:
    """`raw[key]` (else `default`; a None default stays None): an integer in [low, high], else ConfigError."""
    value = raw.get(key, default)
    if value is default and default is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(key, value, f"an integer >= {low} and <= {high}", where)
    return value


def stage_settings(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A stage's settings beside its trials (samples, search, scheduler, objective, resources, ...), checked."""
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
    return {"num_samples": bounded_int(raw, "num_samples", 1, where), "search_alg": search_alg,
            "scheduler": _scheduler(raw.get("scheduler", "fifo"), where), "metric": metric, "mode": mode,
            "resources": _resources(raw.get("resources", {}), where),
            "max_concurrent": bounded_int(raw, "max_concurrent", None, where),
            "max_failures": bounded_int(raw, "max_failures", 2, where, low=0),
            "checkpoints_to_keep": bounded_int(raw, "checkpoints_to_keep", 2, where),
            "seed": bounded_int(raw, "seed", 0, where, low=0, high=MAX_SEED), "match": tuple(match)}


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
