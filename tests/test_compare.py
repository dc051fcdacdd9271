"""Differences over seeds with 95 % Welch intervals (`results.compare`, `bnsweep table --compare`), and the
SYNTHETIC label on everything made from made-up numbers (`bnsweep.testing`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from bnsweep import results
from bnsweep.cli import main
from bnsweep.errors import UsageError
from bnsweep.results import compare, figures, report, tables
from bnsweep.results.columns import SYNTHETIC_TITLE
from bnsweep.testing import write_example_sweep

BN_PRE = "trainable == 'bn' and init == 'from_stage:pretrain'"
FC_PRE = "trainable == 'fc' and init == 'from_stage:pretrain'"
BN_RANDOM = "trainable == 'bn' and init == 'random'"


def test_welch_interval_by_hand():
    a, b = [0.121, 0.134, 0.118], [0.102, 0.110, 0.093, 0.099]
    va, vb = np.var(a, ddof=1) / 3, np.var(b, ddof=1) / 4  # squared standard errors of the two means
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 3)  # Welch-Satterthwaite
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    d = compare.welch(a, b)
    assert d.difference == pytest.approx(np.mean(a) - np.mean(b), abs=1e-15) and (d.n_a, d.n_b) == (3, 4)
    assert (d.low, d.high) == pytest.approx((d.difference - half, d.difference + half), rel=1e-12)
    reference = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (d.low, d.high) == pytest.approx((reference.low, reference.high), rel=1e-12)
    assert d.low > 0  # this gap is more than seed noise ...
    wide = compare.welch([0.12, 0.02, 0.22], [0.10, 0.11, 0.09])
    assert wide.low < 0 < wide.high  # ... this one is not


def test_welch_without_an_interval():
    one = compare.welch([0.5], [0.4, 0.45])
    assert one.n_a == 1 and math.isnan(one.low) and one.difference == pytest.approx(0.075)
    flat = compare.welch([0.0, 0.0, 0.0], [0.0, 0.0])
    assert math.isnan(flat.low) and flat.difference == 0  # no spread: no interval claimed
    assert compare.welch([0.1, float("nan"), 0.3], [0.2, 0.2]).n_a == 2


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    return results.load(write_example_sweep(tmp_path_factory.mktemp("example")))


def test_compare_two_settings_of_a_sweep(example):
    full = compare.compare(example, BN_PRE, FC_PRE)  # the other keys that vary among all trials say where
    assert set(full["within"]) == {"stage=adv, init=pre-trained (stage pretrain), train_attack=pgd, "
                                   "final_attack=autoattack"}
    example = example[example["stage"] == "adv"]
    diffs = compare.compare(example, BN_PRE, FC_PRE).set_index("metric")
    assert set(diffs.index) == {"clean_acc", "robust_acc_eps8", "final_robust_acc_eps8"}
    row = diffs.loc["final_robust_acc_eps8"]
    assert (row["a"], row["b"], row["within"]) == ("trainable=bn", "trainable=fc", "init=pre-trained (stage pretrain)")
    a = example.query(BN_PRE)["final_robust_acc"]
    b = example.query(FC_PRE)["final_robust_acc"]
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (row["difference"], row["low"], row["high"]) == pytest.approx((a.mean() - b.mean(), ci.low, ci.high))
    assert (row["n_a"], row["n_b"]) == (3, 3)
    text = compare.to_markdown(compare.compare(example, BN_PRE, FC_PRE))
    line = next(ln for ln in text.splitlines() if "final robust @8/255" in ln)
    assert f"{100 * (a.mean() - b.mean()):+.1f}" in line and f"{100 * ci.low:+.1f} to {100 * ci.high:+.1f}" in line
    assert "3 vs 3" in line


def test_compare_refuses_what_is_not_one_setting(example):
    with pytest.raises(UsageError, match="selects 2 settings"):
        compare.compare(example, "trainable == 'bn'", FC_PRE)
    with pytest.raises(UsageError, match="selects no trial"):
        compare.compare(example, "trainable == 'none'", FC_PRE)
    with pytest.raises(UsageError, match="the same setting"):
        compare.compare(example, BN_PRE, BN_PRE + " and seed >= 0")


def test_reference_row_and_the_studys_own_comparisons(example):
    adv = example[example["stage"] == "adv"]
    against = compare.against_reference(adv, BN_RANDOM)
    assert len(set(zip(against["a"], against["b"], against["within"]))) == 7  # every other setting, once
    row = against[(against["a"] == "trainable=fc") & (against["metric"] == "clean_acc")].iloc[0]
    assert (row["b"], row["within"]) == ("trainable=bn", "init=random")
    assert row["difference"] == pytest.approx(adv.query("trainable == 'fc' and init == 'random'")["clean_acc"].mean()
                                              - adv.query(BN_RANDOM)["clean_acc"].mean())
    study = compare.study_comparisons(example)
    assert list(dict.fromkeys(zip(study["a"], study["b"]))) == [
        ("trainable=bn", "trainable=fc"), ("init=pre-trained (stage pretrain)", "init=random")]
    assert set(study["within"]) == {"init=pre-trained (stage pretrain)", "trainable=bn"}


def test_table_command_prints_the_interval(tmp_path, capsys):
    root = write_example_sweep(tmp_path / "s")
    assert main(["table", str(root), "--where", "stage == 'adv'", "--compare", BN_PRE, FC_PRE]) == 0
    out = capsys.readouterr().out
    assert "95 % interval (Welch)" in out and "trainable=bn | trainable=fc" in out
    assert main(["table", str(root), "--where", "stage == 'adv'", "--reference", BN_RANDOM]) == 0
    assert capsys.readouterr().out.count("| 3 vs 3 |") == 7 * 3  # 7 settings x clean, PGD and final robust
    assert main(["table", str(root), "--compare", "trainable == 'bn'", FC_PRE]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_report_quotes_the_studys_comparisons(tmp_path):
    text = report.write_report(write_example_sweep(tmp_path / "s"), tmp_path / "rep").read_text()
    section = text.split("### Differences over seeds", 1)[1].split("## Figures", 1)[0]
    assert "| trainable=bn | trainable=fc | init=pre-trained (stage pretrain) | final robust @8/255 |" in section
    assert "| init=pre-trained (stage pretrain) | init=random | trainable=bn |" in section


# ----------------------------------------------------------------------------- synthetic


def test_made_up_numbers_say_synthetic_in_every_title(tmp_path, example):
    table = tables.summarize(example)
    assert tables.to_markdown(table).startswith(f"**{SYNTHETIC_TITLE}.**")
    assert SYNTHETIC_TITLE in tables.to_latex(table) and SYNTHETIC_TITLE in tables.to_latex(table, caption="x")
    hist = results.history(write_example_sweep(tmp_path / "s"))
    for fig in (figures.study_figure(example), figures.robustness_curves(example), figures.training_curves(hist)):
        assert fig.get_suptitle().startswith(SYNTHETIC_TITLE)
    text = report.write_report(tmp_path / "s", tmp_path / "rep").read_text()
    assert text.splitlines()[0] == f"# Sweep report: s ({SYNTHETIC_TITLE})"  # the directory names it
    assert f"**{SYNTHETIC_TITLE}.**" in text  # the table's title too


def test_measured_numbers_are_not_called_synthetic(ray_dir, tmp_path):
    df = results.load(ray_dir)
    assert "synthetic" not in df.columns
    assert SYNTHETIC_TITLE not in tables.to_markdown(tables.summarize(df)) + tables.to_latex(tables.summarize(df))
    assert SYNTHETIC_TITLE not in figures.robustness_curves(df).get_suptitle()
    assert SYNTHETIC_TITLE not in report.write_report(ray_dir, tmp_path / "rep").read_text()
