"""Comparison table, figures, sanity checks, `bnsweep report` and the analysis scripts."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bnsweep import results
from bnsweep.cli import main
from bnsweep.results import figures, report, tables

REPO = Path(__file__).resolve().parent.parent



def _trials(**columns) -> pd.DataFrame:
    """A results-like frame: the given columns plus defaults for the ones the table needs."""
    n = len(next(iter(columns.values())))
    base = {"experiment": ["x"] * n, "stage": ["main"] * n, "trial_id": [f"t{i}" for i in range(n)],
            "status": ["terminated"] * n}
    df = pd.DataFrame({**base, **columns})
    df.attrs["trial_keys"] = [c for c in ("stage", "trainable", "init", "eval_eps_255", "seed",
                                          "data_dir") if c in df.columns]
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
    assert table.loc["bn", "robust_acc_mean"] == pytest.approx(0.3)
    assert table.loc["bn", "robust_acc_std"] == pytest.approx(math.sqrt((0.2**2 + 0.1**2 + 0.3**2) / 2))
    assert table.loc["all", "clean_acc_std"] == pytest.approx(math.sqrt(0.005))
    assert table.loc["all", "robust_acc_std"] == pytest.approx(0.0)
    md = tables.to_markdown(tables.summarize(df))
    assert "| bn | 3 | 60.0 ± 10.0 | 30.0 ± 26.5 |" in md
    assert "| all | 2 | 85.0 ± 7.1 | 40.0 ± 0.0 |" in md
    assert "Shared by all rows: experiment=x, stage=main, init=random" in md
    tex = tables.to_latex(tables.summarize(df))
    assert r"bn & 3 & $60.0 \pm 10.0$ & $30.0 \pm 26.5$ \\" in tex
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


def test_table_from_real_sweep(ray_dir):
    table = tables.summarize(results.load(ray_dir)).set_index("trainable")
    assert table["n_seeds"].to_dict() == {"all": 2, "bn": 1}
    assert table.loc["all", "clean_acc_mean"] == pytest.approx(0.5 + 0.3 + 0.05 + 0.005)


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


def test_sanity_ignores_unfinished_and_no_final_attack():
    df = _good().assign(final_robust_acc=[np.nan, np.nan], final_clean_acc=[np.nan, np.nan],
                        status=["running", "terminated"],
                        final_attack=["autoattack", "none"])
    assert report.sanity_checks(df) == []


# ----------------------------------------------------------------------------- report


def test_report_on_mixed_sweep(mixed_dir, tmp_path):
    path = report.write_report(mixed_dir, tmp_path / "rep")
    text = path.read_text()
    for heading in ("## Summary", "### Best trial per stage", "## Comparison", "## Figures",
                    "## Failed trials", "## Sanity checks"):
        assert heading in text
    assert "| adv | 7 | 2 | 1 | 1 | 2 | 1 |" in text  # terminated, error, diverged, running, pending
    assert "clean_acc (max)" in text and "robust_acc (max)" in text  # objectives per stage
    assert "RuntimeError: CUDA out of memory" in text and "train_loss is nan" in text
    assert "No signs of a broken evaluation" in text
    for name in ("robustness_curves", "training_curves"):
        assert "![" in text and f"({name}.png)" in text
        _png_and_pdf([tmp_path / "rep" / f"{name}.png", tmp_path / "rep" / f"{name}.pdf"])
    assert (tmp_path / "rep" / "table.tex").read_text().startswith(r"\begin{table}")
    assert len(pd.read_csv(tmp_path / "rep" / "trials.csv")) == 9


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
    assert main(["plot", "robustness", str(mixed_dir), "-o", str(tmp_path / "c.png")]) == 0
    _png_and_pdf([tmp_path / "c.png", tmp_path / "c.pdf"])
    assert main(["plot", "training", str(mixed_dir), "-o", str(tmp_path / "t.png")]) == 0
    _png_and_pdf([tmp_path / "t.png", tmp_path / "t.pdf"])
    capsys.readouterr()
    assert main(["plot", "training", str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err


# ----------------------------------------------------------------------------- scripts


@pytest.mark.parametrize("name", ["paper_table.py", "robustness_curves.py", "training_curves.py"])
def test_analysis_scripts_smoke_test(name):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(REPO / "analysis" / name), "--smoke-test"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    if name == "paper_table.py":
        assert "| seeds |" in done.stdout and r"\begin{tabular}" in done.stdout
    else:
        _png_and_pdf([Path(line) for line in done.stdout.split()])
