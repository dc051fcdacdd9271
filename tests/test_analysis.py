"""Comparison table, figures, sanity checks, `bnsweep report` and the analysis scripts."""

from __future__ import annotations

import hashlib
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import BarContainer

import bnsweep
from bnsweep import results
from bnsweep.cli import main
from bnsweep.layout.labels import init_label
from bnsweep.results import figures, report, tables
from bnsweep.testing import write_example_sweep

REPO = Path(__file__).resolve().parent.parent



def _trials(**columns) -> pd.DataFrame:
    """A results-like frame: the given columns plus defaults for the ones the table needs."""
    n = len(next(iter(columns.values())))
    base = {"experiment": ["x"] * n, "stage": ["main"] * n, "trial_id": [f"t{i}" for i in range(n)],
            "status": ["terminated"] * n}
    df = pd.DataFrame({**base, **columns})
    df.attrs["trial_keys"] = [c for c in ("stage", "trainable", "init", "train_attack", "train_eps_255",
                                          "train_steps", "eval_eps_255", "seed", "data_dir")
                              if c in df.columns]
    return df


# ----------------------------------------------------------------------------- table


def test_summary_means_and_stds_by_hand():
    df = _trials(trainable=["bn", "bn", "bn", "all", "all"], init=["random"] * 5,
                 seed=[0, 1, 2, 0, 1], data_dir=["/a", "/b", "/c", "/a", "/b"],
                 clean_acc=[0.50, 0.60, 0.70, 0.80, 0.90], robust_acc=[0.1, 0.2, 0.6, 0.4, 0.4])
    table = tables.summarize(df).set_index("trainable")
    assert list(table.index) == ["all", "bn"]  # data_dir and seed are not settings
    assert table.loc["bn", "n_seeds"] == 3 and table.loc["all", "n_seeds"] == 2
    assert table.loc["bn", "clean_acc_mean"] == pytest.approx(0.6)
    assert table.loc["bn", "clean_acc_std"] == pytest.approx(0.1)  # sample std, ddof=1
    assert table.loc["bn", "robust_acc_eps8_mean"] == pytest.approx(0.3)
    assert table.loc["bn", "robust_acc_eps8_std"] == pytest.approx(math.sqrt((0.2**2 + 0.1**2 + 0.3**2) / 2))
    assert table.loc["all", "clean_acc_std"] == pytest.approx(math.sqrt(0.005))
    assert table.loc["all", "robust_acc_eps8_std"] == pytest.approx(0.0)
    shown = tables.display_table(tables.summarize(df)).set_index("trainable")
    assert shown.loc["bn", "seeds"] == "3" and shown.loc["all", "seeds"] == "2"
    assert shown.loc["bn", "clean (%)"] == "60.0 ± 10.0" and shown.loc["all", "clean (%)"] == "85.0 ± 7.1"
    assert shown.loc["bn", "PGD robust @8/255 (%)"] == "30.0 ± 26.5"  # robust_acc at the default radius
    md = tables.to_markdown(tables.summarize(df))
    assert "Shared by all rows: experiment=x, stage=main, init=random" in md
    tex = tables.to_latex(tables.summarize(df))
    assert r"$60.0 \pm 10.0$" in tex and r"$30.0 \pm 26.5$" in tex
    assert r"\toprule" in tex and r"clean (\%)" in tex and "init=random" in tex


def test_summary_skips_unfinished_and_handles_lists_and_one_seed():
    df = _trials(trainable=["bn", "bn", "fc", "fc"], eval_eps_255=[[2, 8], [2, 8], [2, 8], [4]],
                 seed=[0, 1, 0, 0], clean_acc=[0.5, 0.9, 0.7, 0.6], robust_acc=[0.2] * 4)
    df.loc[1, "status"] = "error"
    table = tables.summarize(df)
    assert table[["trainable", "eval_eps_255"]].values.tolist() == [
        ["bn", (2, 8)], ["fc", (2, 8)], ["fc", (4,)]]
    assert table["n_seeds"].tolist() == [1, 1, 1] and table["clean_acc_std"].isna().all()
    shown = tables.display_table(table)
    assert shown["clean (%)"].tolist() == ["50.0", "70.0", "60.0"]  # no ± for one seed
    assert shown["eval_eps_255"].tolist() == ["2,8", "2,8", "4"]


def test_n_seeds_counts_seeds_not_trials():
    df = _trials(trainable=["bn", "bn", "bn"], seed=[0, 0, 1], device=["cpu", "cuda", "cpu"],
                 clean_acc=[0.5, 0.7, 0.9], robust_acc=[0.2] * 3)
    table = tables.summarize(df)
    assert len(table) == 1 and table["n_seeds"].tolist() == [2]  # device is not part of a setting
    assert table["clean_acc_mean"].tolist() == [pytest.approx(0.7)]  # the mean is over the three trials


def test_table_from_real_sweep(ray_dir):
    table = tables.summarize(results.load(ray_dir)).set_index("trainable")
    assert table["n_seeds"].to_dict() == {"all": 2, "bn": 1}
    assert table.loc["all", "clean_acc_mean"] == pytest.approx(0.5 + 0.3 + 0.05 + 0.005)


def _clean_and_adversarial(**change) -> pd.DataFrame:
    """Two clean-trained trials (their robust_acc is at eval_eps_255[0] = 2/255) and two trained
    with PGD at 8/255 (robust_acc at 8/255), all evaluated at 2 and 8/255."""
    return _trials(**{
        "stage": ["pre", "pre", "adv", "adv"], "trainable": ["all"] * 4,
        "init": ["random", "random", "from_stage:pre", "from_stage:pre"],
        "train_attack": ["none", "none", "pgd", "pgd"], "train_eps_255": [8.0] * 4,
        "train_steps": [7, 7, 3, 3], "eval_eps_255": [[2, 8]] * 4, "seed": [0, 1, 0, 1],
        "clean_acc": [0.9, 0.8, 0.7, 0.6], "robust_acc": [0.30, 0.20, 0.40, 0.30],
        "robust_acc_eps2": [0.30, 0.20, 0.55, 0.45], "robust_acc_eps8": [0.0, 0.02, 0.40, 0.30],
        "final_clean_acc": [0.9, 0.8, 0.7, 0.6], "final_robust_acc": [0.29, 0.19, 0.38, 0.28],
        **change})


def test_robust_columns_hold_one_radius_for_all_rows():
    table = tables.summarize(_clean_and_adversarial())
    by_stage = table.set_index("stage")
    assert by_stage.loc["pre", "robust_acc_eps8_mean"] == pytest.approx(0.01)  # not robust_acc (2/255)
    assert by_stage.loc["adv", "robust_acc_eps8_mean"] == pytest.approx(0.35)
    shown = tables.display_table(table).set_index("stage")
    assert [c for c in shown.columns if "robust" in c] == [
        "PGD robust @8/255 (%)", "final robust @2/255 (%)", "final robust @8/255 (%)"]
    assert shown.loc["pre", "PGD robust @8/255 (%)"] == "1.0 ± 1.4"
    # the final evaluation ran at each trial's own radius: one column per radius
    assert shown.loc["pre", "final robust @2/255 (%)"] == "24.0 ± 7.1"
    assert shown.loc["pre", "final robust @8/255 (%)"] == "-"
    assert shown.loc["adv", "final robust @8/255 (%)"] == "33.0 ± 7.1"
    assert shown.loc["adv", "final robust @2/255 (%)"] == "-"
    assert "final clean (%)" not in shown.columns  # the same numbers as clean (%)


def test_robust_column_is_dash_where_the_radius_was_not_evaluated():
    df = _clean_and_adversarial(eval_eps_255=[[2]] * 4).drop(columns="robust_acc_eps8")
    shown = tables.display_table(tables.summarize(df)).set_index("stage")
    assert shown.loc["pre", "PGD robust @8/255 (%)"] == "-"
    assert shown.loc["adv", "PGD robust @8/255 (%)"] == "35.0 ± 7.1"  # robust_acc is at 8/255
    two = tables.display_table(tables.summarize(_clean_and_adversarial(), radii=[2, 8])).set_index("stage")
    assert two.loc["pre", "PGD robust @2/255 (%)"] == "25.0 ± 7.1"
    assert two.loc["adv", "PGD robust @2/255 (%)"] == "50.0 ± 7.1"
    assert two.loc["adv", "PGD robust @8/255 (%)"] == "35.0 ± 7.1"


def test_keys_that_do_not_apply_do_not_split_settings():
    table = tables.summarize(_clean_and_adversarial())
    assert list(table["stage"]) == ["pre", "adv"]
    assert "train_steps" not in table.columns  # 7 vs 3, but the clean trials never ran PGD
    assert table.attrs["common_where"] == {
        "rows where train_attack is pgd": {"train_eps_255": 8.0, "train_steps": 3}}
    assert "by all rows where train_attack is pgd: train_eps_255=8, train_steps=3" in tables.to_markdown(table)
    varied = tables.summarize(_clean_and_adversarial(train_steps=[7, 7, 3, 5]))
    shown = tables.display_table(varied)
    assert shown[["stage", "train_steps"]].values.tolist() == [["pre", "-"], ["adv", "3"], ["adv", "5"]]


def test_eval_every_does_not_split_settings():
    """How often the per-epoch evaluation ran changes no number in the table: seeds that differ
    only in `eval_every` are one setting."""
    df = _trials(trainable=["bn"] * 3, seed=[0, 1, 2], eval_every=[1, 3, 3], clean_acc=[0.5, 0.6, 0.7],
                 robust_acc=[0.1, 0.2, 0.3])
    df.attrs["trial_keys"] += ["eval_every"]
    table = tables.summarize(df)
    assert table["n_seeds"].tolist() == [3] and "eval_every" not in table.columns


@pytest.mark.parametrize("init,label", [
    ("random", "random"), ("from_stage:pretrain", "pre-trained (stage pretrain)"),
    ("/runs/a/checkpoint.pt", "pre-trained (a/checkpoint.pt)")])
def test_init_labels(init, label):
    assert init_label(init) == label
    df = _trials(init=[init, "random"] if init != "random" else ["random", "from_stage:x"],
                 clean_acc=[0.5, 0.6])
    assert label in tables.display_table(tables.summarize(df))["init"].tolist()


def test_example_sweep_table_and_legends_are_plain(tmp_path):
    df = results.load(write_example_sweep(tmp_path / "s"))
    shown = tables.display_table(tables.summarize(df))
    assert shown["init"].tolist() == ["random"] + ["pre-trained (stage pretrain)"] * 4 + ["random"] * 4
    assert shown["train_attack"].tolist() == ["none"] + ["pgd"] * 8
    for c in ("train_steps", "train_step_255", "train_eps_255", "final_steps"):
        assert c not in shown.columns
    legend = [t.get_text() for t in figures.robustness_curves(df).legends[0].get_texts()]
    assert len(legend) == 9
    assert legend[0] == "stage=pretrain, init=random, trainable=all (n=3)"
    assert legend[1] == "stage=adv, init=pre-trained (stage pretrain), trainable=all (n=3)"
    assert not any(k in text for text in legend for k in ("train_attack", "final_attack", "train_steps"))


# ----------------------------------------------------------------------------- figures


def _png_and_pdf(paths: list[Path]) -> None:
    png, pdf = paths
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 5_000


def test_figures_written(mixed_dir, tmp_path):
    df, hist = results.load(mixed_dir), results.history(mixed_dir)
    _png_and_pdf(figures.save_figure(figures.robustness_curves(df), tmp_path / "rc.png"))
    fig = figures.training_curves(hist)
    assert [ax.get_xlabel() for ax in fig.axes] == ["Epoch", "Epoch"]
    assert len(fig.legends[0].get_texts()) == 2  # stage pre vs adv (terminated trials)
    _png_and_pdf(figures.save_figure(fig, tmp_path / "sub" / "tc.pdf"))


def test_robustness_curve_points_are_seed_means(ray_dir):
    df = results.load(ray_dir)
    ax = figures.robustness_curves(df).axes[0]
    assert ax.get_xlabel().startswith("L∞ radius") and ax.get_ylabel() == "Robust accuracy (%)"
    line = ax.get_lines()[0]  # trainable=all, mean over seeds 0 and 1
    expected = df[(df.trainable == "all") & (df.status == "terminated")][
        ["robust_acc_eps2", "robust_acc_eps4", "robust_acc_eps8"]].mean() * 100
    np.testing.assert_allclose(line.get_ydata(), expected.to_numpy())
    assert list(line.get_xdata()) == [2, 4, 8]


def test_study_figure_bars_are_seed_means_per_init(tmp_path):
    df = results.load(write_example_sweep(tmp_path / "s"))
    fig = figures.study_figure(df)
    assert [ax.get_title() for ax in fig.axes] == ["init: pre-trained (stage pretrain)", "init: random"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["clean", "robust (AutoAttack @8/255)"]
    adv = df[df["stage"] == "adv"]  # the clean pre-training trials are no bars
    for ax, init in zip(fig.axes, ["from_stage:pretrain", "random"]):
        assert [t.get_text() for t in ax.get_xticklabels()] == ["all", "bn", "bn+fc", "fc"]
        clean, robust = [c for c in ax.containers if isinstance(c, BarContainer)]
        trials = adv[adv["init"] == init].groupby("trainable")
        for bars, metric in ((clean, "final_clean_acc"), (robust, "final_robust_acc")):
            assert len(bars.patches) == 4
            np.testing.assert_allclose([b.get_height() for b in bars], trials[metric].mean() * 100)
            half = [abs(s[1][1] - s[0][1]) / 2 for s in bars.errorbar.lines[2][0].get_segments()]
            np.testing.assert_allclose(half, trials[metric].std() * 100)
    _png_and_pdf(figures.save_figure(fig, tmp_path / "study.png"))


def test_study_figure_refuses_mixed_radii():
    df = _trials(trainable=["bn", "bn"], train_attack=["pgd", "pgd"], train_eps_255=[4.0, 8.0],
                 clean_acc=[0.5, 0.6], robust_acc=[0.2, 0.1])
    with pytest.raises(ValueError, match="several robust radii"):
        figures.study_figure(df)


def test_training_curves_draw_robust_accuracy_at_one_radius(tmp_path):
    hist = results.history(write_example_sweep(tmp_path / "s"))
    fig = figures.training_curves(hist)
    assert [ax.get_title() for ax in fig.axes] == ["Clean accuracy", "PGD robust accuracy @8/255"]
    pretrain = fig.axes[1].get_lines()[0]  # clean-trained: robust_acc is at 2/255, drawn at 8/255
    expected = hist[hist["stage"] == "pretrain"].groupby("epoch")["robust_acc_eps8"].mean() * 100
    np.testing.assert_allclose(pretrain.get_ydata(), expected.to_numpy())


def test_training_curves_join_the_evaluated_epochs(tmp_path):
    """With `eval_every`, epochs without an evaluation are left out, not drawn as gaps."""
    hist = results.history(write_example_sweep(tmp_path / "s"))
    hist.loc[hist["epoch"] == 2, [c for c in hist.columns if c.endswith("_acc") or "_acc_eps" in c]] = np.nan
    fig = figures.training_curves(hist)
    line = fig.axes[0].get_lines()[0]
    assert list(line.get_xdata()) == [1, 3] and not np.isnan(line.get_ydata()).any()


def test_figures_refuse_without_data():
    with pytest.raises(ValueError, match="robust_acc_eps"):
        figures.robustness_curves(_trials(clean_acc=[0.5]))
    with pytest.raises(ValueError, match="no trials"):
        figures.robustness_curves(_trials(robust_acc_eps8=[0.5], status=["error"]))


# ----------------------------------------------------------------------------- sanity checks


def _good() -> pd.DataFrame:
    return _trials(trainable=["bn", "all"], clean_acc=[0.8, 0.9], robust_acc=[0.40, 0.45],
                   robust_acc_eps2=[0.70, 0.8], robust_acc_eps8=[0.40, 0.45],
                   final_clean_acc=[0.8, 0.9], final_robust_acc=[0.39, 0.452],
                   final_attack=["autoattack", "autoattack"])


def test_sanity_silent_on_good_results(ray_dir):
    assert report.sanity_checks(_good()) == []
    assert report.sanity_checks(results.load(ray_dir)) == []


@pytest.mark.parametrize("change,check", [
    ({"robust_acc_eps8": [0.40, 0.85]}, "robust accuracy does not fall as epsilon grows"),
    ({"robust_acc": [0.40, 0.95]}, "robust accuracy above clean accuracy"),
    ({"final_robust_acc": [0.39, 0.47]}, "AutoAttack above PGD"),
    ({"final_robust_acc": [0.39, np.nan]}, "final metrics missing"),
])
def test_sanity_fires_on_bad_results(change, check):
    df = _good().assign(**change)
    findings = report.sanity_checks(df)
    assert {f.check for f in findings} == {check}
    assert {f.trial_id for f in findings if f.check == check} == {"t1"}


def _with_autoattack(**change) -> pd.DataFrame:
    """Adversarial trials with the final PGD and, beside it, AutoAttack on the first 200 images."""
    columns = dict(final_autoattack=["none", "none", "apgd-ce+apgd-t", "apgd-ce+apgd-t"],
                   final_autoattack_n=[0, 0, 200, 200], eval_n=[500] * 4,
                   final_autoattack_acc=[np.nan, np.nan, 0.30, 0.22],
                   final_autoattack_before_acc=[np.nan, np.nan, 0.37, 0.29])
    df = _clean_and_adversarial(**{**columns, **change})
    df.attrs["trial_keys"] += ["final_autoattack", "final_autoattack_n", "eval_n"]
    return df


def test_autoattack_column_beside_the_final_pgd():
    shown = tables.display_table(tables.summarize(_with_autoattack())).set_index("stage")
    assert shown["final_autoattack"].tolist() == ["none", "apgd-ce+apgd-t"]  # a key that differs: a column
    assert [c for c in shown.columns if c.startswith("final") and "@" in c] == [
        "final robust @2/255 (%)", "final robust @8/255 (%)", "final AutoAttack @8/255 (%)"]
    assert shown.loc["adv", "final AutoAttack @8/255 (%)"] == "26.0 ± 5.7"
    assert shown.loc["adv", "final robust @8/255 (%)"] == "33.0 ± 7.1"
    assert shown.loc["pre", "final AutoAttack @8/255 (%)"] == "-"  # the clean rows ran none
    assert list(tables.summarize(_with_autoattack())["stage"]) == ["pre", "adv"]  # n=0 under none splits nothing


def test_table_groups_auto_precision_by_what_each_trial_ran_with():
    df = _trials(trainable=["bn"] * 4, seed=[0, 1, 0, 1], precision=["auto"] * 4, compile=["auto"] * 4,
                 precision_reported=["bf16", "bf16", "fp32", "fp32"], compile_reported=[True] * 4,
                 clean_acc=[0.5, 0.6, 0.7, 0.8], robust_acc=[0.1] * 4)
    df.attrs["trial_keys"] += ["precision", "compile"]
    table = tables.summarize(df)
    assert table["precision"].tolist() == ["bf16", "fp32"] and table["n_seeds"].tolist() == [2, 2]
    assert table.attrs["common"]["compile"] == True  # noqa: E712 - a numpy bool


def test_report_says_how_far_pgd_and_autoattack_differ():
    (line,) = report.autoattack_gap(_with_autoattack())
    assert "stage adv, 2 trial(s), apgd-ce+apgd-t on the first 200 evaluation images" in line
    assert "33.0% robust on average, AutoAttack after it 26.0%: 7.0 points lower on average, at most 7.0" in line
    assert report.autoattack_gap(_clean_and_adversarial()) == []  # no AutoAttack column, no line
    assert report.sanity_checks(_with_autoattack()) == []
    broken = report.sanity_checks(_with_autoattack(final_autoattack_acc=[np.nan, np.nan, 0.30, 0.31]))
    assert [(f.check, f.trial_id) for f in broken] == [("AutoAttack above PGD", "t3")]


def test_sanity_ignores_unfinished_and_no_final_attack():
    df = _good().assign(final_robust_acc=[np.nan, np.nan], final_clean_acc=[np.nan, np.nan],
                        status=["running", "terminated"],
                        final_attack=["autoattack", "none"])
    assert report.sanity_checks(df) == []


# ----------------------------------------------------------------------------- report


def test_report_on_mixed_sweep(mixed_dir, tmp_path):
    path = report.write_report(mixed_dir, tmp_path / "rep")
    text = path.read_text()
    for heading in ("## Summary", "### Best trial per stage", "### Devices", "## Comparison", "## Figures",
                    "## Failed trials", "## Sanity checks"):
        assert heading in text
    assert "*Not reported by these trials.*" in text  # hand-made trials say nothing of their device
    counts = report.summary_table(results.load(mixed_dir)).set_index("stage")
    assert counts.loc["adv", ["trials", "terminated", "error", "diverged", "running", "pending"]].tolist() == [
        7, 2, 1, 1, 2, 1]
    assert "clean_acc (max)" in text and "robust_acc @8/255 (max)" in text  # objectives per stage
    assert "RuntimeError: CUDA out of memory" in text and "train_loss is nan" in text
    assert "No signs of a broken evaluation" in text
    for name in ("study", "robustness_curves", "training_curves"):
        assert "![" in text and f"({name}.png)" in text
        _png_and_pdf([tmp_path / "rep" / f"{name}.png", tmp_path / "rep" / f"{name}.pdf"])
    assert (tmp_path / "rep" / "table.tex").read_text().startswith(r"\begin{table}")
    assert len(pd.read_csv(tmp_path / "rep" / "trials.csv")) == 9
    digest = hashlib.sha256((mixed_dir / "sweep.yaml").read_bytes()).hexdigest()
    assert f"SHA-256 `{digest}`" in text and f"bnsweep {bnsweep.__version__}" in text


def test_code_commit(monkeypatch, tmp_path):
    from bnsweep import provenance

    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    code = provenance.code()
    assert re.fullmatch(r"[0-9a-f]{40}", code.commit) and code.version == bnsweep.__version__
    assert str(code) == f"{bnsweep.__version__} (commit {code.commit}{' with uncommitted changes' * code.dirty})"
    monkeypatch.setenv("BNSWEEP_COMMIT", code.commit)
    assert provenance.code() == code  # the checkout's own HEAD: git's answer, its changes included
    # a tree copied with a stale .git (its HEAD older than the tree): the copier names the commit
    monkeypatch.setenv("BNSWEEP_COMMIT", "f" * 40)
    assert provenance.code() == provenance.Code(bnsweep.__version__, "f" * 40)
    monkeypatch.delenv("BNSWEEP_COMMIT")
    monkeypatch.setattr(bnsweep, "__file__", str(tmp_path / "bnsweep" / "__init__.py"))
    assert provenance.code().commit is None  # an installed package: no commit to name
    # a copy of the checkout without its .git (synced to a GPU machine): the copier names the commit
    monkeypatch.setenv("BNSWEEP_COMMIT", code.commit)
    assert provenance.code() == provenance.Code(bnsweep.__version__, code.commit)


def test_report_cli_flags_and_errors(ray_dir, tmp_path, capsys):
    assert main(["report", str(ray_dir), "-o", str(tmp_path / "r"), "--metric", "clean_acc", "--mode", "min"]) == 0
    text = (tmp_path / "r" / "report.md").read_text()
    assert "clean_acc (min)" in text and "simulated failure in epoch 2" in text
    assert main(["report", str(tmp_path / "empty"), "-o", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bnsweep: error:") and "no such directory" in err


def test_table_and_plot_commands(mixed_dir, tmp_path, capsys):
    assert main(["table", str(mixed_dir), "--where", "stage == 'adv'", "--format", "both"]) == 0
    out = capsys.readouterr().out
    assert "| seeds |" in out and r"\begin{tabular}" in out
    assert main(["table", str(mixed_dir), "--eps-255", "2", "8"]) == 0
    out = capsys.readouterr().out
    assert "PGD robust @2/255 (%)" in out and "PGD robust @8/255 (%)" in out
    assert main(["plot", "study", str(mixed_dir), "-o", str(tmp_path / "s.png")]) == 0
    _png_and_pdf([tmp_path / "s.png", tmp_path / "s.pdf"])
    assert main(["plot", "robustness", str(mixed_dir), "-o", str(tmp_path / "c.png")]) == 0
    _png_and_pdf([tmp_path / "c.png", tmp_path / "c.pdf"])
    assert main(["plot", "training", str(mixed_dir), "-o", str(tmp_path / "t.png")]) == 0
    _png_and_pdf([tmp_path / "t.png", tmp_path / "t.pdf"])
    capsys.readouterr()
    assert main(["plot", "training", str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_run_summary_names_the_radius(tmp_path):
    from bnsweep.cli.sweeps import summary

    text = summary(str(write_example_sweep(tmp_path / "s")), "adv")
    header = next(line for line in text.splitlines() if line.startswith("|"))  # after the SYNTHETIC title
    assert "final robust @8/255 (%)" in header and "stage" not in header  # one stage: shared
    assert "pre-trained (stage pretrain)" in text


def test_run_summary_shows_the_autoattack_column(tmp_path):
    """The table `bnsweep run` prints at the end of a stage has the AutoAttack column beside the
    final PGD where the trials ran `final_autoattack`."""
    import random

    from bnsweep.cli.sweeps import summary
    from bnsweep.testing import (
        FakeTrial,
        realistic_config,
        realistic_rows,
        write_experiment,
    )

    rng, trials = random.Random(0), []
    for seed in (0, 1):
        rows = realistic_rows(2, rng, eval_eps=[8.0], final_attack="pgd")
        rows[-1].update(final_autoattack_before_acc=rows[-1]["final_robust_acc"],
                        final_autoattack_acc=rows[-1]["final_robust_acc"] - 0.05)
        config = {**realistic_config(seed, "bn", "random", "adv"), "eval_eps_255": [8.0], "final_attack": "pgd",
                  "final_autoattack": "apgd-ce+apgd-t", "final_autoattack_n": 200}
        trials.append(FakeTrial(config, rows))
    write_experiment(tmp_path / "s" / "adv", trials)
    (tmp_path / "s" / "sweep.yaml").write_text("name: s\nstages:\n  - name: adv\n")
    header = next(line for line in summary(str(tmp_path / "s"), "adv").splitlines() if line.startswith("|"))
    assert "final robust @8/255 (%)" in header and "final AutoAttack @8/255 (%)" in header


# ----------------------------------------------------------------------------- scripts


@pytest.mark.parametrize("name", ["paper_table.py", "study_figure.py", "robustness_curves.py",
                                  "training_curves.py"])
def test_analysis_scripts_smoke_test(name):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(REPO / "analysis" / name), "--smoke-test"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    if name == "paper_table.py":
        assert "| seeds |" in done.stdout and r"\begin{tabular}" in done.stdout
    else:
        _png_and_pdf([Path(line) for line in done.stdout.split()])
