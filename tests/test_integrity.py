"""Integrity of experiments against careless and hostile input: exceptions that survive Ray,
`--where` that cannot run code, names that stay inside the storage, one driver per experiment
however it is spelled, untrusted directories refused, damaged directories skipped or refused."""

from __future__ import annotations

import pickle
import sys

import pytest

from bnsweep import errors
from bnsweep.errors import BadInput, ConfigError


def subclasses(cls: type) -> list[type]:
    return [cls] + [s for sub in cls.__subclasses__() for s in subclasses(sub)]


BAD_INPUTS = [ConfigError("init", {"from_stage": "pre"}, "an earlier stage", "s.yaml: stage 'adv'"),
              *(cls("a message naming what to fix") for cls in subclasses(BadInput) if cls is not ConfigError)]


@pytest.mark.parametrize("err", BAD_INPUTS, ids=lambda e: type(e).__name__)
def test_bad_input_errors_pickle_by_value(err):
    import ray.cloudpickle

    for module in (pickle, ray.cloudpickle):
        back = module.loads(module.dumps(err))
        assert type(back) is type(err) and str(back) == str(err) and back.__dict__ == err.__dict__
    if isinstance(err, ConfigError):
        assert (back.key, back.value, back.allowed) == ("init", {"from_stage": "pre"}, "an earlier stage")


def test_every_bad_input_class_is_covered():
    assert {type(e) for e in BAD_INPUTS} >= {errors.ConfigError, errors.DataError, errors.UsageError,
                                             errors.NoExperimentError}


def config_error_trial(config, **kwargs):
    raise ConfigError("init", "/ckpt/other.pt", "a checkpoint of resnet8 (width 0.25)", "trial")


def test_config_error_inside_a_ray_trial_reaches_the_driver_intact(tmp_path, ray_local):
    import ray.cloudpickle

    from bnsweep import results
    from bnsweep.sweep.driver import SweepFailed, execute
    from bnsweep.sweep.spec import parse_sweep

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    sweep = parse_sweep("name: raises\ntrial: {dataset: planted, model: resnet8, epochs: 1}\nmax_failures: 0\n",
                        "raises.yaml")
    root = str(tmp_path / "raises")
    message = "trial: init: '/ckpt/other.pt' is not allowed; allowed: a checkpoint of resnet8 (width 0.25)"
    with pytest.raises(SweepFailed) as failed:
        execute(sweep, root, resume=False, trainable=config_error_trial)
    assert f"ConfigError: {message}" in str(failed.value)
    assert results.load(root)["error"].tolist() == [f"bnsweep.errors.ConfigError: {message}"]
