"""What the README and the docs publish stays true: every number they quote from a run equals the
committed record of that run (docs/runs/), a measured number no record backs says so, the trial-key
reference and the layout are generated from the code, and the images they show exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from bnsweep.core.keys import key_table

REPO = Path(__file__).resolve().parent.parent
# The README and the site's pages (a record's own report.md under docs/runs/ is evidence, not a page).
DOCS = [REPO / "README.md", *sorted(p for p in (REPO / "docs").rglob("*.md") if "runs" not in p.relative_to(REPO / "docs").parts)]


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def record_of(doc: Path, spec: str) -> str:
    """The repository path of the record a block of `doc` quotes (specs are relative to the file)."""
    return _rel((doc.parent / shlex.split(spec)[0]).resolve())


def quoting(doc: Path) -> list[re.Match]:
    from bnsweep.results import quote

    return list(quote.blocks(doc.read_text()))


QUOTING = [doc for doc in DOCS if quoting(doc)]


def test_readme_is_a_front_door():
    """At most 8 KB; the two commands a newcomer needs (the ones CI's install follows); every link
    into the docs leads to a page of the site."""
    readme = (REPO / "README.md").read_text()
    assert len(readme.encode()) <= 8192
    assert 'pip install -e ".[test]" && bnsweep run sweeps/demo.yaml' in readme
    assert 'pip install -e ".[test]" && pytest' in readme
    assert 'pip install --quiet -e ".[test,docs]"' in (REPO / ".ci" / "run").read_text()
    links = re.findall(r"\]\((docs/[^)#\s]+\.md)", readme)
    assert len(links) > 20 and all((REPO / link).is_file() for link in links), links


def test_trial_key_reference_is_generated_from_the_code():
    """The trial-key page holds no typed copy: it asks for the table `bnsweep validate --keys`
    prints, and that table is the code's (the README holds none)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_generate", REPO / "docs" / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    page = (REPO / "docs" / "reference" / "trial-keys.md").read_text()
    assert "<!-- generated: trial-keys -->" in page
    assert all("| `dataset` |" not in doc.read_text() for doc in DOCS)
    assert key_table().strip() in generate.expand(page, "reference/trial-keys.md")


def test_layout_names_every_top_level_folder_sweep_file_and_script():
    """contributing.md's Layout: the folders of the repository, the sweep files and scripts (the
    package's modules are generated there from their docstrings: tests/test_docs.py checks the site)."""
    layout = (REPO / "docs" / "contributing.md").read_text().split("## Layout", 1)[1].split("\n## ", 1)[0]
    folders = [p for p in REPO.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
               and p.name not in ("site", "results", "data", "build", "wheelhouse") and not p.name.endswith(".egg-info")]
    for path in [*folders, *(REPO / "sweeps").iterdir(), *(REPO / "scripts").glob("*.[ps][yh]")]:
        if path.suffix == ".txt":
            continue
        assert re.search(rf"\b{re.escape(path.name)}\b", layout), f"{_rel(path)} missing from contributing.md's Layout"


def test_project_never_points_at_files_users_do_not_have():
    for path in [*DOCS, *REPO.glob("bnsweep/**/*.py"), *REPO.glob("sweeps/**/*.yaml"), *REPO.glob("analysis/*.py")]:
        text = path.read_text()
        assert "../shared" not in text and "/work/shared" not in text and "design.md" not in text \
            and "notes/" not in text, path


# ----------------------------------------------------------------------------- published numbers


def _stale(doc: Path, text: str) -> list[tuple[str, str, str]]:
    """(spec, quoted, rendered) of the blocks of `text` (as `doc`) that differ from their record."""
    from bnsweep.results import quote

    rendered = ((m["spec"], m["body"], quote.render(m["spec"], doc.parent)) for m in quote.blocks(text))
    return [(spec, quoted, new) for spec, quoted, new in rendered if quoted != new]


@pytest.mark.parametrize("doc", QUOTING, ids=_rel)
def test_every_quoted_number_equals_its_record(doc):
    """Tables, timings and benchmark figures between `<!-- record: ... -->` markers are rendered from
    the committed records under docs/runs/; rewrite them with: bnsweep quote FILE"""
    from bnsweep.results import quote

    text = doc.read_text()
    stale = _stale(doc, text)
    assert not stale, f"{_rel(doc)} differs from its records (bnsweep quote {_rel(doc)}):\n" + "\n".join(
        f"{spec}:\n  quoted: {quoted!r}\n  record: {rendered!r}" for spec, quoted, rendered in stale)
    assert quote.rewrite(doc, check=True) == []  # what `bnsweep quote FILE --check` does


def test_quotes_are_found():
    assert {"docs/studies/demo.md", "docs/studies/cifar10-laptop.md", "docs/performance.md"} <= {_rel(d) for d in QUOTING}


@pytest.mark.parametrize("doc", QUOTING, ids=_rel)
def test_one_digit_changed_in_a_quoted_block_is_caught(doc):

    text = doc.read_text()
    changed, expected = list(text), []
    for m in quoting(doc):  # the first digit of every block, each one up by one
        digit = re.search(r"\d", m["body"])
        if digit:
            at = m.start("body") + digit.start()
            changed[at] = str((int(text[at]) + 1) % 10)
            expected.append(m["spec"])
    assert expected and [spec for spec, _, _ in _stale(doc, "".join(changed))] == expected


def test_every_record_in_docs_runs_is_quoted():
    from bnsweep.results import quote

    quoted = {record_of(doc, m["spec"]) for doc in DOCS for m in quote.blocks(doc.read_text())}
    runs = {_rel(p) for p in (REPO / "docs" / "runs").iterdir() if not p.name.startswith(".")}
    assert runs == quoted, "every committed record is quoted by a page, every quoted record is committed"


def test_a_block_of_a_missing_record_fails():
    """A mistyped record path in a block is an error, not a skipped block."""
    from bnsweep.errors import UsageError
    from bnsweep.results import quote

    page = REPO / "docs" / "studies" / "cifar10-laptop.md"
    with pytest.raises(UsageError, match="not a run record"):
        quote.render("../runs/cifar10-laptopp wall", page.parent)


def test_images_the_docs_show_exist():
    for doc in DOCS:
        for image in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", doc.read_text()):
            assert "://" in image or (doc.parent / image).is_file(), f"{_rel(doc)}: {image}"


# A measured time or throughput, or a mean ± std over seeds: what only a run can say. ("every 10 s" is
# a setting, not a measurement.)
MEASURED = re.compile(r"(?<!every )\b\d[\d,.]*(?:-\d[\d,.]*)? ?(?:ms|s|min|minutes|h|hours|img/s)\b|\d ± \d")
SAYS_UNRECORDED = re.compile(r"not recorded|unrecorded|projected|projection|projects\b", re.IGNORECASE)
# The GPU run's own output (scripts/gpu_study.py, the resume, the packing benchmark), committed beside
# its record: a passage that cites it is checked against it by test_the_gpu_run_section_follows_its_output.
GPU_RUN = REPO / "docs" / "runs" / "cifar10-gpu-short" / "gpu-run"
CITES_GPU_RUN = "`docs/runs/cifar10-gpu-short/gpu-run/`"


def _passages(text: str) -> list[tuple[int, int]]:
    """(start, end) of each passage of `text`: a heading, or a paragraph that opens with a bold
    lead-in (`**An earlier measurement, not recorded.**`), starts a new one."""
    starts, at, blank = [0], 0, True
    for line in text.splitlines(keepends=True):
        if line.startswith("#") or (blank and line.startswith("**")):
            starts.append(at)
        blank, at = not line.strip(), at + len(line)
    return list(zip(starts, [*starts[1:], len(text)]))


def _unrecorded(text: str) -> list[str]:
    """The lines of `text` that state a measured number outside a quoted block (and outside code)
    in a passage that does not say the number is unrecorded or projected."""
    from bnsweep.results import quote

    quoted = [(m.start(), m.end()) for m in quote.blocks(text)] + quote._fences(text)
    passages = _passages(text)
    found = []
    for m in MEASURED.finditer(text):
        if any(a <= m.start() < b for a, b in quoted):
            continue
        start, end = next((a, b) for a, b in passages if a <= m.start() < b)
        if not SAYS_UNRECORDED.search(text[start:end]) and CITES_GPU_RUN not in text[start:end]:
            line = text.count("\n", 0, m.start()) + 1
            found.append(f"line {line}: {text.splitlines()[line - 1].strip()[:100]}")
    return list(dict.fromkeys(found))


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_numbers_no_record_backs_say_so(doc):
    """A time, throughput or mean ± std a page states outside a quoted block has no record behind
    it, so its passage must say so ('not recorded', 'unrecorded', or a projection with its
    arithmetic): a measured number typed into the docs without its record fails here."""
    unlabelled = _unrecorded(doc.read_text())
    assert not unlabelled, (f"{_rel(doc)}: numbers no record backs, not said to be unrecorded or projected "
                            "(quote them from a record, or say so):\n" + "\n".join(unlabelled))


def test_the_check_for_unrecorded_numbers_can_fail():
    text = ("## Speed\n\nThe demo took 4 min 16 s, about 12.1 ± 0.8 %, refreshed every 10 s.\n\n"
            "It took <!-- record: docs/runs/demo wall -->3 s<!-- /record -->.\n\n"
            "**Projected.** 3 x 2 s = 6 s on 2 seeds of resnet8s.\n\n```bash\nsleep 5 s\n```\n"
            "### Again\n\nAn earlier, unrecorded run: 9 min.\n")
    assert _unrecorded(text) == ["line 3: The demo took 4 min 16 s, about 12.1 ± 0.8 %, refreshed every 10 s."]
    assert MEASURED.findall("4 min 16 s, 12.1 ± 0.8, 3,150 img/s, 35-36 s") == [
        "4 min", "16 s", "1 ± 0", "3,150 img/s", "35-36 s"]


def test_each_record_names_the_command_that_remakes_it():
    """A run record's command ran the sweep file this checkout holds, unchanged since but for its
    comments (so running the command again remakes the record); a benchmark record's command names
    parts the benchmark has and writes that record."""
    import json

    from bnsweep.bench.runner import PARTS

    for path in sorted((REPO / "docs" / "runs").iterdir()):
        if path.is_dir():
            meta = json.loads((path / "record.json").read_text())
            argv = shlex.split(meta["command"])
            assert argv[:2] == ["bnsweep", "run"], path
            sweep = Path(argv[2])
            if sweep.is_absolute():  # run in a copy of the checkout elsewhere (a GPU machine): its sweeps/
                sweep = Path(*sweep.parts[sweep.parts.index("sweeps"):])
            sweep = REPO / sweep
            # what it runs, unchanged: its comments (sizes, reasons, projections) may have been edited since
            assert sweep.is_file() and yaml.safe_load(sweep.read_text()) == yaml.safe_load(
                (path / "sweep.yaml").read_text()), (
                f"{sweep} changed since {path.name} was recorded: run it again (docs/guides/run-records.md)")
            assert ("--set" in argv) == (path / "overrides.yaml").is_file(), path
        else:
            prefix = "# bnsweep benchmark record: python -m bnsweep.bench "
            first = path.read_text().splitlines()[0]
            assert first.startswith(prefix), path
            argv = shlex.split(first[len(prefix):])
            assert argv[argv.index("--record") + 1] == str(path.relative_to(REPO))
            parts = argv[argv.index("--part") + 1:]
            parts = parts[:next((i for i, a in enumerate(parts) if a.startswith("-")), len(parts))]
            assert parts and set(parts) <= set(PARTS), path


def test_a_committed_record_reports_without_its_experiment(tmp_path):
    """As on a fresh clone: only the record's committed files, elsewhere, and no experiment directory."""
    import json
    import shutil

    from bnsweep import results
    from bnsweep.cli import main

    for path in sorted(p for p in (REPO / "docs" / "runs").iterdir() if p.is_dir()):
        copy = tmp_path / path.name
        shutil.copytree(path, copy)
        assert main(["report", str(copy), "-o", str(tmp_path / f"{path.name}-report")]) == 0
        text = (tmp_path / f"{path.name}-report" / "report.md").read_text()
        experiment = json.loads((path / "record.json").read_text())["experiment"]
        assert f"From the run record of experiment `{experiment}`" in text and "## Comparison" in text
        assert (tmp_path / f"{path.name}-report" / "study.png").is_file()
        assert len(results.load(copy)) == len(results.load(path)) > 0


def test_the_laptop_study_reading_follows_its_record():
    """docs/studies/cifar10-laptop.md's "What the record shows" states orderings its quotes do not,
    of the bf16 record and, where the page says so, of the fp32 one: BN-only beats classifier-only (intervals above 0 under PGD-20 in both; under AutoAttack above 0
    in fp32 only), the classifier-only rows lose the most from PGD-20 to AutoAttack, and training
    every parameter is best under AutoAttack from either init. "bf16 against fp32" counts the rows
    where bf16 lies within one fp32 std of fp32. A re-recorded run that breaks one must change the text."""
    from bnsweep import results
    from bnsweep.results import compare

    page = (REPO / "docs" / "studies" / "cifar10-laptop.md").read_text()
    assert "BN-only beat classifier-only training under PGD-20; under AutoAttack three seeds cannot tell" in page
    assert "Training every parameter was best" in page and "that interval excludes 0" in page
    runs = {name: results.select(results.load(REPO / "docs" / "runs" / name), where="stage == 'adv'")
            for name in ("cifar10-laptop", "cifar10-laptop-fp32")}
    lows = {}
    for name, df in runs.items():
        diffs = compare.compare(df, "trainable == 'bn' and init != 'random'", "trainable == 'fc' and init != 'random'")
        lows[name] = diffs.set_index("metric")["low"]
        assert (df["train_eps_255"] == 8).all()  # the final attacks ran at the training radius, 8/255
        means = df.groupby(["init", "trainable"])[["final_robust_acc", "final_autoattack_acc"]].mean()
        drop = means["final_robust_acc"] - means["final_autoattack_acc"]
        assert drop.idxmax() == ("from_stage:pretrain", "fc"), name
        best = means["final_autoattack_acc"].groupby(level="init").idxmax()
        assert [trainable for _, trainable in best] == ["all", "all"], name
    assert lows["cifar10-laptop"]["final_robust_acc_eps8"] > 0 >= lows["cifar10-laptop"]["final_autoattack_acc_eps8"]
    assert lows["cifar10-laptop-fp32"][["final_robust_acc_eps8", "final_autoattack_acc_eps8"]].min() > 0
    bf16, fp32 = runs["cifar10-laptop"], runs["cifar10-laptop-fp32"]
    assert set(bf16["precision_reported"]) == {"bf16"} and set(fp32["precision_reported"]) == {"fp32"}
    fc = bf16.loc[(bf16["trainable"] == "fc") & (bf16["init"] != "random"), "final_autoattack_acc"]
    assert fc.max() >= 2 * fc.min()
    within, total, largest = 0, 0, 0.0
    for metric in ("final_robust_acc", "final_autoattack_acc"):
        a, b = (df.groupby(["init", "trainable"])[metric] for df in (bf16, fp32))
        gap = (a.mean() - b.mean()).abs()
        within, total, largest = within + int((gap <= b.std()).sum()), total + len(gap), max(largest, gap.max())
    assert f"{within} of the {total} adversarial rows'" in page
    assert f"largest difference of means is {100 * largest:.1f} points" in page


def test_the_gpu_study_reading_follows_its_record():
    """docs/studies/cifar10-gpu.md's "What the record shows" and the README's caption state what their
    quotes do not: BN-only beats classifier-only on pre-trained features (interval under AutoAttack
    above 0); on random features BN-only gives less, by an interval two seeds cannot tell from 0, with
    every pre-trained seed above every random one; training every parameter is best under AutoAttack
    from either init; AutoAttack's mean is below PGD-50's in every row."""
    from bnsweep import results
    from bnsweep.results import compare

    page = (REPO / "docs" / "studies" / "cifar10-gpu.md").read_text()
    readme = (REPO / "README.md").read_text()
    assert "two seeds cannot tell that difference from 0, though every seed" in page
    assert "on random features it gave less (two seeds cannot tell how much less)" in " ".join(readme.split())
    df = results.select(results.load(REPO / "docs" / "runs" / "cifar10-gpu-short"), where="stage == 'adv'")
    assert (df["train_eps_255"] == 8).all()
    pre_bn, rand_bn = "init != 'random' and trainable == 'bn'", "init == 'random' and trainable == 'bn'"
    low = compare.compare(df, pre_bn, "init != 'random' and trainable == 'fc'").set_index("metric")["low"]
    assert low["final_autoattack_acc_eps8"] > 0
    init = compare.compare(df, pre_bn, rand_bn).set_index("metric")
    assert init.loc["final_autoattack_acc_eps8", "difference"] > 0 > init.loc["final_autoattack_acc_eps8", "low"]
    for metric in ("final_robust_acc", "final_autoattack_acc"):
        assert df.query(pre_bn)[metric].min() > df.query(rand_bn)[metric].max()
    means = df.groupby(["init", "trainable"])[["final_robust_acc", "final_autoattack_acc"]].mean()
    assert [t for _, t in means["final_autoattack_acc"].groupby(level="init").idxmax()] == ["all", "all"]
    assert (means["final_autoattack_acc"] < means["final_robust_acc"]).all()


COMMIT = re.compile(r"\b[0-9a-f]{7,40}\b")


def named_commits() -> dict[str, set[str]]:
    """Each commit the published text names, with the files naming it: hashes on a line that says
    "commit" in the README, the pages, the sweep files and the records (record.json's and a
    benchmark record's provenance)."""
    import json

    texts = [*DOCS, *sorted((REPO / "sweeps").glob("*.yaml")),
             *sorted(p for p in (REPO / "docs" / "runs").iterdir() if p.is_file())]
    named: dict[str, set[str]] = {}
    for path in texts:
        for line in path.read_text().splitlines():
            if "commit" in line:
                for sha in COMMIT.findall(line):
                    named.setdefault(sha, set()).add(_rel(path))
    for path in sorted((REPO / "docs" / "runs").glob("*/record.json")):
        meta = json.loads(path.read_text())
        for sha in [meta["recorded"]["commit"], *(code["commit"] for code in meta["code"])]:
            named.setdefault(sha, set()).add(_rel(path))
    return named


def _git(*args: str) -> str:
    import subprocess

    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_every_commit_the_docs_name_is_in_the_history():
    """A reader can check out the code behind each number: every commit a page, a sweep file or a
    record names is an ancestor of the checkout (a commit lost from the history, or one never pushed,
    fails here). Needs the whole history: a shallow clone or an export without git is skipped."""
    import subprocess

    try:
        shallow = _git("rev-parse", "--is-shallow-repository")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    if shallow == "true":
        pytest.skip("a shallow clone lacks the history")
    named = named_commits()
    assert {"0b555da"} <= set(named), "the scan finds the commits the pages name"
    lost = {sha: sorted(files) for sha, files in named.items() if subprocess.run(
        ["git", "-C", str(REPO), "merge-base", "--is-ancestor", sha, "HEAD"], capture_output=True).returncode}
    assert not lost, f"commits named but not in the history: {lost}"


def test_the_demo_reading_follows_its_record():
    """docs/studies/demo.md says: normal training reaches high clean and about 0 % robust accuracy,
    adversarial training of every parameter is robust, none (or most) of the comparisons' intervals
    exclude 0 (contain 0), and the record's trials trained in bf16. A re-recorded demo that breaks
    one must change the text."""
    from bnsweep import results
    from bnsweep.results import compare

    page = (REPO / "docs" / "studies" / "demo.md").read_text()
    assert "the record's trials ran bf16" in page
    df = results.load(REPO / "docs" / "runs" / "demo")
    pre, adv = df[df["stage"] == "pretrain"], df[df["stage"] == "adv"]
    assert pre["clean_acc"].min() > 0.9 and pre["robust_acc_eps8"].max() < 0.05
    assert adv.loc[adv["trainable"] == "all", "final_robust_acc"].min() > 0.4
    diffs = compare.study_comparisons(df)
    undecided = ((diffs["low"] <= 0) & (diffs["high"] >= 0)).sum()
    if undecided == len(diffs):
        assert "none of the comparisons the paper is about can be told apart" in page
    else:
        assert undecided > len(diffs) / 2 and "most of the comparisons" in page
    assert set(df["precision_reported"]) == {"bf16"}


def test_the_gpu_run_section_follows_its_output():
    """docs/studies/cifar10-gpu.md's timing section states what the GPU machine wrote (gpu-run/:
    scripts/gpu_study.py's summary, the resume's start and end, the packing benchmark's table) and
    what the sweep file's header projected: each phrase below, computed from those files, is in the
    section, and every other time or throughput the section states outside quoted blocks is in one."""
    import gzip
    import json

    from bnsweep.layout.labels import duration
    from bnsweep.results import quote

    summary = json.loads((GPU_RUN / "summary.json").read_text())
    phase = {p["phase"]: p for p in summary["phases"]}
    stages = {s["stage"]: s for s in summary["stages"]["cifar10-gpu-short"]}
    adv, pre = stages["adv"], stages["pretrain"]
    start, end = (int(x) for x in (GPU_RUN / "resume-start.txt").read_text().split())
    study, resume = round(phase["study"]["seconds"]), end - start
    header = (REPO / "sweeps" / "cifar10-gpu-short.yaml").read_text().split("\nname:")[0]
    alone = re.search(r"PGD-5 training .*= ([\d,]+) img/s", header)[1]
    projected_s, projected_min = re.search(r"about (\d+) s = ([\d.]+) min", header).groups()
    log = gzip.decompress((GPU_RUN / "log.txt.gz").read_bytes()).decode()
    limit = re.search(r"\] study: .* \(at most (\d+) s\)", log)[1]  # the study phase's limit in that run
    bench = re.findall(r"^ +(\d+) +(\d+) +([\d.]+)x$", (GPU_RUN / "bench-packing.txt").read_text(), re.M)
    phrases = [
        f"limit of {limit} s", f"{adv['statuses']['terminated']} of the 16 adversarial trials were done",
        f"the GPU for {round(start - phase['study']['end'])} s",
        f"took {study} s + {resume} s = {duration(study + resume, exact=True)}", "within the 8 minutes",
        f"but {(study + resume) / int(projected_s):.1f}x the", f"({projected_min} minutes)",
        f"trained at {adv['trial_images_per_s']:,} img/s, {adv['trials_at_once']} trials at once: "
        f"{round(adv['trial_images_per_s'] * adv['trials_at_once'], -2):,.0f} img/s in all",
        f"busy (a kernel running, as `nvidia-smi` samples it) {adv['gpu_busy_mean_pct']} % of that stage's",
        f"one trial alone at {alone} img/s", f"busy {pre['gpu_busy_mean_pct']} % of its time",
        *(f"| {n} | {int(ips):,} | {ratio}x |" for n, ips, ratio in bench)]
    text = (REPO / "docs" / "studies" / "cifar10-gpu.md").read_text()
    section = text[text.index("### How long it took"):]
    flat = " ".join(section.split())
    assert len(bench) == 3 and not [p for p in phrases if p not in flat]
    # the sweep file's header says the same of the run
    assert f"# {duration(study + resume, exact=True)} running" in header
    assert f"(busy {adv['gpu_busy_mean_pct']} % of the adversarial stage" in header
    unquoted = " ".join(quote.BLOCK.sub(" ", section).split())
    assert not [m[0] for m in MEASURED.finditer(unquoted) if not any(m[0] in p for p in phrases)]
