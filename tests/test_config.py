"""TrialConfig validation: every bad value is refused with one line naming the key; good values resolve."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import yaml

from bnsweep.core.choices import DatasetName
from bnsweep.core.config import (
    CHOICES,
    KEYS,
    ConfigError,
    TrialConfig,
    allowed_values,
    make_config,
)
from bnsweep.core.yamlfile import load_yaml, parse_overrides


def refused(values, **kw) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        make_config(values, **kw)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{err.value.key}:") or ": " + err.value.key + ":" in message
    return err.value


@pytest.mark.parametrize("values, key", [
    ({"trainable": "bnn"}, "trainable"),
    ({"adv_fraction": 2}, "adv_fraction"),
    ({"adv_fraction": -0.1}, "adv_fraction"),
    ({"train_eps_255": -1}, "train_eps_255"),
    ({"foo": 1}, "key"),
    ({"epochs": "three"}, "epochs"),
    ({"epochs": 0}, "epochs"),
    ({"epochs": 2.5}, "epochs"),
    ({"epochs": True}, "epochs"),
    ({"batch_size": 0}, "batch_size"),
    ({"dataset": "mnist"}, "dataset"),
    ({"model": "resnet9"}, "model"),
    ({"model": "wrn-27-2"}, "model"),
    ({"eval_eps_255": []}, "eval_eps_255"),
    ({"eval_eps_255": [8, 300]}, "eval_eps_255"),
    ({"eval_eps_255": ["8"]}, "eval_eps_255"),
    ({"lr": 0}, "lr"),
    ({"lr": float("nan")}, "lr"),
    ({"lr": float("inf")}, "lr"),
    ({"lr": "0.1"}, "lr"),
    ({"width": 0}, "width"),
    ({"bn_stats": "moving"}, "bn_stats"),
    ({"bn_init": "zeros"}, "bn_init"),
    ({"train_attack": "cw"}, "train_attack"),
    ({"attack_bn_mode": "batch"}, "attack_bn_mode"),
    ({"schedule": "linear"}, "schedule"),
    ({"final_attack": "fab"}, "final_attack"),
    ({"download": "yes"}, "download"),
    ({"device": "gpu"}, "device"),
    ({"eval_restarts": 0}, "eval_restarts"),
    ({"eval_n": 0}, "eval_n"),
    ({"train_steps": 0}, "train_steps"),
    ({"train_eps_255": 0}, "train_eps_255"),  # an attack with radius 0 trains nothing adversarially
    ({"init": "/no/such/checkpoint.pt"}, "init"),
    ({"init": {"from_stage": ""}}, "init"),
    ({"init": {"stage": "a"}}, "init"),
    ({"precision": "fp16"}, "precision"),
    ({"compile": "yes"}, "compile"),
    ({"compile": 1}, "compile"),
    ({"eval_every": 0}, "eval_every"),
    ({"final_autoattack": "fab"}, "final_autoattack"),
    ({"final_autoattack_n": -1}, "final_autoattack_n"),
    ({"final_autoattack": "standard", "final_attack": "autoattack"}, "final_autoattack"),
])
def test_bad_values_name_their_key(values, key):
    err = refused(values)
    assert err.key == key
    bad = next(iter(values.values())) if key != "key" else next(iter(values))
    assert repr(bad) in str(err) or str(bad) in str(err)
    assert "allowed" in str(err)


def test_where_prefixes_the_message():
    err = refused({"epochs": 0}, where="sweep.yaml, stage a")
    assert str(err).startswith("sweep.yaml, stage a: epochs: 0")


def test_unknown_key_message_lists_the_keys():
    err = refused({"lerning_rate": 0.1})
    assert "lerning_rate" in str(err) and "lr" in str(err)


def test_defaults_and_good_values():
    cfg = make_config()
    assert isinstance(cfg, TrialConfig)
    assert set(cfg.to_dict()) == set(KEYS)
    good = make_config({"trainable": "bn+fc", "adv_fraction": 0, "train_eps_255": 0, "lr": 1, "epochs": 1,
                        "eval_eps_255": 4, "model": "wrn-16-2", "device": "cuda:1", "init": {"from_stage": "pre"}})
    assert good.lr == 1.0 and isinstance(good.lr, float)  # ints accepted where floats are expected
    assert good.eval_eps_255 == (4.0,)
    assert good.init == "from_stage:pre" and good.stage_init == "pre"
    assert make_config({"adv_fraction": 1}).adv_fraction == 1.0
    assert make_config({"train_attack": "none", "train_eps_255": 0}).train_eps_255 == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("key, choice", sorted(CHOICES.items()))
def test_fixed_choices_come_from_their_enum(key, choice):
    for member in choice:
        if member is DatasetName.FOLDER:
            continue  # needs an image tree: tests/test_folder.py
        value = getattr(make_config({key: member.value}, check_paths=False), key)
        assert value == member and type(value) is str  # plain strings, for Ray's param_space and YAML
    assert allowed_values(key) == ", ".join(m.value for m in choice)
    err = refused({key: "nonsense"})
    assert (err.key, err.allowed) == (key, allowed_values(key))


def test_default_config_is_plain_yaml():
    assert yaml.safe_load(yaml.safe_dump(TrialConfig().to_dict())) == TrialConfig().to_dict()


def test_robust_eps_follows_training_radius_or_first_eval_radius():
    assert make_config({"train_eps_255": 4, "eval_eps_255": [2, 8]}).robust_eps_255 == 4
    assert make_config({"train_attack": "none", "eval_eps_255": [2, 8]}).robust_eps_255 == 2


def test_paths_become_absolute_and_to_dict_is_json(tmp_path, monkeypatch):
    from bnsweep.core import checkpoints
    from bnsweep.core.models import build_model

    ckpt = tmp_path / "c.pt"
    checkpoints.save(str(ckpt), {"model": build_model("resnet20", 10).state_dict()})
    monkeypatch.chdir(tmp_path)
    cfg = make_config({"data_dir": "data", "init": "c.pt", "eval_eps_255": [2, 8]})
    assert cfg.data_dir == os.path.join(str(tmp_path), "data")
    assert cfg.init == str(ckpt)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["eval_eps_255"] == [2.0, 8.0]
    assert make_config(d) == cfg  # a saved config validates back to itself


def test_base_config_keeps_its_values():
    base = make_config({"trainable": "bn", "epochs": 3})
    cfg = make_config({"epochs": 5}, base=base)
    assert (cfg.trainable, cfg.epochs) == ("bn", 5)


def test_parse_overrides_reads_yaml_scalars():
    got = parse_overrides(["epochs=3", "lr=0.05", "trainable=bn+fc", "augment=false", "eval_eps_255=[2, 8]",
                           "weight_decay=5e-4", "lr_exp=1e-3", "data_dir=", "init={from_stage: a}"])
    assert got == {"epochs": 3, "lr": 0.05, "trainable": "bn+fc", "augment": False, "eval_eps_255": [2, 8],
                   "weight_decay": 5e-4, "lr_exp": 1e-3, "data_dir": "", "init": {"from_stage": "a"}}
    cfg = make_config(parse_overrides(["lr=1e-3", "weight_decay=5E-4", "momentum=1.0e-1"]))
    assert (cfg.lr, cfg.weight_decay, cfg.momentum) == (1e-3, 5e-4, 0.1)
    with pytest.raises(ConfigError) as err:
        parse_overrides(["epochs"])
    assert err.value.key == "--set"


def test_load_yaml(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("trainable: bn\nlr: 5e-3\neval_eps_255: [2, 8]\n")
    assert make_config(load_yaml(str(good))).lr == 5e-3
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainable: [bn\n")
    with pytest.raises(ConfigError) as err:
        load_yaml(str(bad))
    assert err.value.key == "file" and str(bad) in str(err.value) and "\n" not in str(err.value)
    code = tmp_path / "code.yaml"
    code.write_text("!!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError):
        load_yaml(str(code))  # the safe loader builds no Python objects
    with pytest.raises(ConfigError) as err:
        load_yaml(str(tmp_path / "missing.yaml"))
    assert err.value.key == "file"
