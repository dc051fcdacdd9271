"""Which parameters train and which BatchNorm statistics move: the knobs the study is about.

`trainable` is an expression over named groups that mean the same in every model (see `groups`):
terms joined by `+`, a `-` before a term removes it, applied left to right; `KIND@PLACE` restricts
bn, conv or fc to one place (`bn@stage3`), and `glob:PATTERN` matches parameter names (fnmatch,
case-sensitive). The five original sets (all, bn, bn+fc, fc, none) are such expressions.

Frozen parameters get `requires_grad=False`, so autograd never computes their weight gradients
(the saving that makes BN-only training cheaper, not just a masked update).
"""

from __future__ import annotations

import contextlib
import fnmatch
import re
from typing import Collection, Iterator, Sequence

import torch
from torch import nn

from bnsweep.core.choices import AttackBNMode, BNInit, BNStats

BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
KINDS = ("bn", "conv", "fc")
_STAGE = re.compile(r"layer(\d+)")
# `+` and `-` outside [...]: glob character classes such as [1-2] keep their `-`
_OPERATOR = re.compile(r"([+-])(?![^\[]*\])")
_GLOB = re.compile(r"(?:[^\[\]\s]|\[[^\[\]\s]+\])+")  # no whitespace, classes closed and not nested


class SelectionError(ValueError):
    """A `trainable` expression that does not resolve; `term` is the culprit."""

    def __init__(self, term: str, problem: str):
        self.term, self.problem = term, problem
        super().__init__(f"term {term!r} {problem}")


def bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of `model`, in module order."""
    return [m for m in model.modules() if isinstance(m, BN_TYPES)]


def _params_of(model: nn.Module, types: tuple[type[nn.Module], ...]) -> set[str]:
    return {f"{name}.{p}" for name, m in model.named_modules() if isinstance(m, types)
            for p, _ in m.named_parameters(recurse=False)}


def places(model: nn.Module) -> dict[str, set[str]]:
    """Parameter names by place, in forward order: `stem` (top-level modules before the first
    residual stage), `stage1` ... `stageN` (the modules `layer1` ... `layerN`) and `head` (after
    the last stage: the classifier, and the final BN of pre-activation nets)."""
    out: dict[str, set[str]] = {"stem": set()}
    place = "stem"
    for child, module in model.named_children():
        stage = _STAGE.fullmatch(child)
        place = f"stage{stage.group(1)}" if stage else ("stem" if place == "stem" else "head")
        out.setdefault(place, set()).update(f"{child}.{p}" for p, _ in module.named_parameters())
    return out


def kinds(model: nn.Module) -> dict[str, set[str]]:
    """Parameter names by kind: BatchNorm affine parameters, convolution weights, the classifier."""
    return {"bn": _params_of(model, BN_TYPES), "conv": _params_of(model, (nn.Conv2d,)),
            "fc": {f"fc.{p}" for p, _ in model.get_submodule("fc").named_parameters()}}


def groups(model: nn.Module) -> dict[str, set[str]]:
    """Every named group: all, none, the kinds (bn, conv, fc) and the places (stem, stage1.., head)."""
    return {"all": {name for name, _ in model.named_parameters()}, "none": set(), **kinds(model),
            **places(model)}


def group_list(model: nn.Module) -> str:
    """The groups `trainable` can name in this model, for messages and `bnsweep layers`."""
    return ", ".join(groups(model)) + ", KIND@PLACE (e.g. bn@stage3), glob:PATTERN"


def _term(model: nn.Module, named: dict[str, set[str]], term: str) -> set[str]:
    """The parameter names one term (without its sign) stands for; never empty."""
    if term.startswith("glob:"):
        pattern = term[len("glob:"):]
        if not _GLOB.fullmatch(pattern):
            raise SelectionError(term, "is not a glob pattern (fnmatch: * ? [abc] [!abc] [0-9], no spaces)")
        found = {n for n in named["all"] if fnmatch.fnmatchcase(n, pattern)}
    elif "@" in term:
        kind, _, place = term.partition("@")
        if kind not in KINDS:
            raise SelectionError(term, f"restricts {kind!r}; before @ comes {', '.join(KINDS)}")
        if place not in places(model):
            raise SelectionError(term, f"names no place {place!r}; after @ comes {', '.join(places(model))}")
        found = named[kind] & named[place]
    elif term in named:
        found = named[term]
    else:
        raise SelectionError(term, "names no group")
    if not found:
        raise SelectionError(term, "matches no parameter of this model")
    return found


def trainable_names(model: nn.Module, expression: str) -> set[str]:
    """The parameter names a `trainable` expression selects. Raises SelectionError for an unknown group, a bad
    glob, a term that matches no parameter, or a term that changes nothing (a typo, or a cut that
    silently equals another: `bn-stem` where the stem has no BN)."""
    if expression == "none":
        return set()
    named = groups(model)
    parts = _OPERATOR.split(expression)
    terms = list(zip(["+", *parts[1::2]], parts[::2]))
    if len(terms) > 1 and not terms[0][1]:  # a leading sign: "-stem" removes from nothing
        terms = terms[1:]
    chosen: set[str] = set()
    for sign, term in terms:
        if not term:
            raise SelectionError(term, "is empty; terms are joined by a single + or -")
        found = _term(model, named, term)
        if sign == "+" and found <= chosen:
            raise SelectionError(term, "adds nothing: its parameters are already selected")
        if sign == "-" and not chosen & found:
            raise SelectionError("-" + term, "removes nothing: none of its parameters is selected"
                                 + ("" if chosen else "; start with what to keep, e.g. all-stem"))
        chosen = chosen - found if sign == "-" else chosen | found
    return chosen


def describe(model: nn.Module, names: Collection[str]) -> str:
    """A selection in groups, the same string for the same selection whatever expression made it
    (reported with every trial as `trainable_groups`): all, none, or whole kinds, then whole places,
    then KIND@PLACE, joined by +; a KIND@PLACE only partly selected (by a glob) says how many of its
    tensors are, e.g. bn@stage3(2/6). Without such parts the string is itself an expression."""
    named, chosen = groups(model), set(names)
    if chosen in (named["all"], set()):
        return "all" if chosen else "none"
    full_kinds = [k for k in KINDS if named[k] <= chosen]
    covered = set().union(*(named[k] for k in full_kinds))
    full_places = [p for p in places(model) if named[p] <= chosen and named[p] - covered]
    covered |= set().union(*(named[p] for p in full_places))
    cells = []
    for place in places(model):
        for kind in KINDS:
            cell = (named[kind] & named[place]) - covered
            if cell & chosen:
                part = "" if cell <= chosen else f"({len(cell & chosen)}/{len(cell)})"
                cells.append(f"{kind}@{place}{part}")
    return "+".join(full_kinds + full_places + cells)


def set_trainable(model: nn.Module, names: Collection[str]) -> list[nn.Parameter]:
    """Set `requires_grad` for exactly the parameters named; return them."""
    params = []
    for name, p in model.named_parameters():
        p.requires_grad_(name in names)
        if name in names:
            params.append(p)
    return params


def moving_bn(model: nn.Module, bn_stats: str, selected: Collection[str] = ()) -> Sequence[nn.Module]:
    """The BN layers whose running statistics move in training: every one (`update`), none
    (`frozen`), or those with a parameter in the trainable selection (`selected`)."""
    if bn_stats != BNStats.SELECTED:
        return bn_layers(model) if bn_stats == BNStats.UPDATE else []
    return [m for name, m in model.named_modules() if isinstance(m, BN_TYPES)
            and any(f"{name}.{p}" in selected for p, _ in m.named_parameters(recurse=False))]


def init_bn(model: nn.Module, bn_init: str, generator: torch.Generator | None = None) -> None:
    """BatchNorm scale at random init: ones (PyTorch) or U[0, 1] (Frankle et al.'s BN-only setting)."""
    if bn_init == BNInit.UNIFORM:
        with torch.no_grad():
            for m in bn_layers(model):
                m.weight.copy_(torch.rand(m.weight.shape, generator=generator))


def train_mode(model: nn.Module, bn_stats: str, selected: Collection[str] = ()) -> None:
    """Train mode; BN layers whose statistics do not move (`moving_bn`) normalise with their running
    statistics and keep them."""
    model.train()
    moving = set(moving_bn(model, bn_stats, selected))
    for m in bn_layers(model):
        m.train(m in moving)


@contextlib.contextmanager
def bn_mode(model: nn.Module, mode: str, bn_stats: str, selected: Collection[str] = ()) -> Iterator[None]:
    """BatchNorm mode while crafting attacks, restored afterwards.

    `eval`: BN uses running statistics. `train`: BN normalises with batch statistics (as in
    fast_adversarial), but running statistics are saved and restored, so only the training forward
    pass moves them; layers whose statistics do not move in training (`bn_stats`) stay in eval mode.
    """
    layers = bn_layers(model)
    was_training = [m.training for m in layers]
    batch_stats = moving_bn(model, bn_stats, selected) if mode == AttackBNMode.TRAIN else []
    saved = [{k: v.clone() for k, v in m.state_dict().items() if k.startswith(("running_", "num_batches"))}
             for m in batch_stats]
    for layer in layers:
        layer.train(layer in batch_stats)
    try:
        yield
    finally:
        for m, stats in zip(batch_stats, saved):
            m.load_state_dict({**m.state_dict(), **stats})
        for m, was in zip(layers, was_training):
            m.train(was)


@contextlib.contextmanager
def frozen(params: list[nn.Parameter]) -> Iterator[None]:
    """`params` stop requiring gradients for the block, then require them again.

    For attack steps under torch.compile: its backward computes the weight gradients of every
    parameter that requires them, even when `autograd.grad(loss, [x])` asks only for the input's
    (eager autograd skips them by itself, so there this changes nothing).
    """
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total
