"""Property-based tests of the parsers that take user text: sweep files, `--set`, `trainable`
expressions and `--where`. For any input the answer is a value or one BadInput line (the command
line: exit 0 or one `bnsweep: error:` line with exit 2), never another exception, a traceback or a
raw control character. The parsers are called in this process (hundreds of inputs in seconds); a
few command-line round trips check the printing."""

from __future__ import annotations

import random
import re
import string

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bnsweep.cli import main
from bnsweep.core.config import KEYS, make_config
from bnsweep.core.yamlfile import parse_overrides
from bnsweep.errors import BadInput
from bnsweep.layout.plans import (
    SETTING_KEYS,
    STAGE_KEYS,
    TOP_KEYS,
    stage_objectives,
    stage_plans,
)
from bnsweep.sweep.spec import parse_sweep

# Default-suite budget: ~150 inputs per parser (seconds each); deadline off for a loaded machine.
FAST = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
FEW = settings(FAST, max_examples=25)
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e]")


def answers_or_refuses(parse, *args):
    """`parse(*args)`'s value, or None when it raised BadInput with a one-line message."""
    try:
        return parse(*args)
    except BadInput as err:
        assert "\n" not in str(err) and str(err).strip(), repr(str(err))
        return None


# -- sweep files --------------------------------------------------------------------------------
# Text of any kind, and YAML documents built from bnsweep's own keys with values of every type
# (so validation gets past parsing), including values known to be hostile.

HOSTILE = ["wrn-1000000-1", "wrn-28-10", "resnet8", "bn+fc", "bn@stage9", "glob:layer[", "nan", ".inf", -1, 0,
           10 ** 30, 1e308, float("nan"), float("inf"), "from_stage:x", {"from_stage": "pre"}, "/dev/zero",
           "x\nbnsweep: error: forged", "\x1b[2J", "", None, True, [], {}]
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
                    st.sampled_from(HOSTILE))
keys = st.one_of(st.sampled_from(sorted({*TOP_KEYS, *STAGE_KEYS, *SETTING_KEYS, *KEYS, "asha", "uniform",
                                         "choice", "loguniform", "randint", "cpu", "gpu", "from_stage"})),
                 st.text(max_size=10))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(keys, inner, max_size=4)), max_leaves=12)
documents = st.dictionaries(keys, values, max_size=6).map(lambda d: yaml.safe_dump(d, allow_unicode=True))


@FAST
@given(st.one_of(st.text(max_size=200), documents))
def test_any_sweep_file_parses_or_is_one_line(text):
    answers_or_refuses(parse_sweep, text, "fuzz.yaml")
    answers_or_refuses(stage_plans, text, "fuzz.yaml")  # what `status` reads
    answers_or_refuses(stage_objectives, text, "fuzz.yaml")  # what `results` reads


# -- --set KEY=VALUE ------------------------------------------------------------------------------

items = st.lists(st.one_of(st.text(max_size=30),
                           st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), st.text(max_size=20)),
                           st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), st.sampled_from(HOSTILE))),
                 max_size=4)


@FAST
@given(items)
def test_any_set_parses_or_is_one_line(overrides):
    values = answers_or_refuses(parse_overrides, overrides)
    if values is not None:
        answers_or_refuses(make_config, values)


# -- trainable expressions ----------------------------------------------------------------------

GROUPS = ["all", "none", "bn", "conv", "fc", "stem", "stage1", "stage2", "stage3", "stage4", "head", "bn@stage3",
          "conv@head", "fc@stem", "glob:layer3.*", "glob:*.bn?.weight", "glob:[", "glob:", "@", "bn@"]
expressions = st.one_of(
    st.text(max_size=40),
    st.lists(st.tuples(st.sampled_from(["+", "-", "", "++", " + "]), st.sampled_from(GROUPS)), min_size=1,
             max_size=5).map(lambda terms: "".join(sign + term for sign, term in terms)))


@FAST
@given(expressions, st.sampled_from(["resnet8", "preact_resnet18", "wrn-16-1"]))
def test_any_trainable_expression_resolves_or_is_one_line(expression, model):
    answers_or_refuses(make_config, {"model": model, "width": 0.25, "trainable": expression})


# -- --where ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def frame():
    import tempfile
    from pathlib import Path

    from bnsweep import results
    from bnsweep.testing import (
        FakeTrial,
        realistic_config,
        realistic_rows,
        write_experiment,
    )

    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        write_experiment(Path(tmp) / "main", [FakeTrial(realistic_config(s, t, "random"), realistic_rows(3, rng))
                                             for s in (0, 1) for t in ("bn", "all")])
        return results.load(tmp)


COLUMNS = ["robust_acc", "clean_acc", "trainable", "seed", "status", "epochs", "eval_eps_255", "error",
           "`robust_acc_eps0.5`", "`no such`", "nope"]
OPERATORS = ["==", "!=", "<", "<=", ">", ">=", "in", "not in", "and", "or", "+", "-", "*", "/", "//", "%", "**",
             "not", "@", ".", "(", ")", "[", "]", ","]
LITERALS = ["0", "0.5", "1e308", "-1", "'bn'", '"all"', "[1, 2]", "['bn']", "None", "True", "nan", "x",
            "10**10**10", "()", "{}", "lambda: 0", "__import__('os')"]
where_texts = st.one_of(
    st.text(max_size=60),
    st.lists(st.sampled_from(COLUMNS + OPERATORS + LITERALS), min_size=1, max_size=9).map(" ".join))


@FAST
@given(where=where_texts)
def test_any_where_filters_or_is_one_line(frame, where):
    from bnsweep import results

    answers_or_refuses(results.select, frame, where)


# -- a few round trips through the command line --------------------------------------------------

def exits_0_or_one_line(capsys, argv) -> None:
    code = main(argv)
    err = capsys.readouterr().err
    assert not CONTROL.search(err), err
    if code == 0:
        return
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("bnsweep: error: "), (code, err)


@FEW
@given(st.one_of(st.text(max_size=100), documents))
def test_validate_any_sweep_file(tmp_path_factory, capsys, text):
    path = tmp_path_factory.mktemp("fuzz") / "sweep.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    exits_0_or_one_line(capsys, ["validate", str(path)])


@FEW
@given(expressions)
def test_layers_any_trainable(capsys, expression):
    exits_0_or_one_line(capsys, ["layers", "resnet8", "--width", "0.25", "--trainable", expression])


@FEW
@given(where=where_texts)
def test_results_any_where(mixed_dir, capsys, where):
    exits_0_or_one_line(capsys, ["results", str(mixed_dir), "--where", where, "--columns", "trial_id"])


@FEW
@given(st.lists(st.text(alphabet=string.printable + "\x1b\u202e\u2028é", max_size=12), max_size=3))
def test_any_command_line_words(capsys, words):
    """Arbitrary words after a subcommand: argparse's own errors are the same one line."""
    for command in ("status", "validate", "results", "layers"):
        exits_0_or_one_line(capsys, [command, *words])
