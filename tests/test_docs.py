"""The docs stay true: every command and snippet in README.md and docs/ runs, in a cheap form that
still means something; every `bnsweep.x.y` name and repository path they name exists; and the built
site shows every option of every parser, every trial key and every result column.

How each shell command is checked is decided by `RULES`, a table of command prefixes; a command no
rule covers fails, so a new kind of command in the docs needs a rule. Commands run in this process
(the `bnsweep` entry point, `runpy` for scripts) inside a workspace that holds a generated finished
sweep at `results/demo`, so that renaming an option, a subcommand or a module breaks a test here,
not a reader.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import importlib.util
import io
import json
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def _load_generate():
    spec = importlib.util.spec_from_file_location("docs_generate", REPO / "docs" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = _load_generate()


# -- blocks and commands ------------------------------------------------------------------------

FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
                   re.MULTILINE | re.DOTALL)
SHELL = ("bash", "sh", "shell")  # every line is a command
PROMPTED = ("console", "")  # only `$ ` lines are commands (the rest is output)


@dataclass
class Block:
    path: Path
    line: int
    lang: str
    body: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


@dataclass
class Command:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    where: str = ""

    def __str__(self) -> str:
        return shlex.join(self.argv)


def blocks(path: Path) -> list[Block]:
    text = path.read_text()
    found = []
    for m in FENCE.finditer(text):
        indent = len(m["indent"])
        body = "\n".join(line[indent:] for line in m["body"].splitlines())
        found.append(Block(path, text.count("\n", 0, m.start()) + 1, m["lang"], body))
    return found


def commands(block: Block) -> list[Command]:
    """The commands of a shell block: continuation lines joined, comments dropped, `a && b` split,
    leading VAR=value assignments kept as the command's environment."""
    lines, logical = [], ""
    for line in block.body.splitlines():
        if block.lang in PROMPTED and not logical:
            if not line.startswith("$ "):
                continue
            line = line[2:]
        if line.rstrip().endswith("\\"):
            logical += line.rstrip()[:-1] + " "
            continue
        lines.append(logical + line)
        logical = ""
    found = []
    for line in lines:
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            part, words = words[:cut], words[cut + 1:]
            env = {}
            while part and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", part[0]):
                key, _, value = part.pop(0).partition("=")
                env[key] = value
            if part:
                found.append(Command(part, env, block.where))
    return found


def all_blocks() -> list[Block]:
    return [b for path in DOC_FILES for b in blocks(path)]


# -- the workspace commands run in --------------------------------------------------------------

class Workspace:
    """A directory to run doc commands in: the repository's sweeps and scripts reachable by their
    relative paths, a generated finished sweep at `results/demo` (and `results/cifar10-laptop`), and
    stand-ins for data that only exists on a user's machine."""

    # Placeholders the docs use for a user's files -> what stands in for them here.
    PLACEHOLDERS = {"PATH/cifar10-jpeg.tar.gz": "folder", "/data/cifar10-jpeg.tar.gz": "folder",
                    "/shared/cifar10-jpeg.tar.gz": "folder"}
    CIFAR = {"cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]),
             "cifar100": ("cifar-100-python", ["train", "test", "meta"])}
    FILES = {"trial.yaml": "dataset: planted\nmodel: resnet8\n"}  # files the docs assume the user wrote

    def __init__(self, root: Path, example: Path):
        self.root = root
        for name in ("sweeps", "analysis", "scripts"):
            (root / name).symlink_to(REPO / name)
        shutil.copytree(example, root / "results" / "demo")
        (root / "results" / "cifar10-laptop").symlink_to(root / "results" / "demo")
        for name, text in self.FILES.items():
            (root / name).write_text(text)
        self._standins: dict[str, str] = {}

    def standin(self, kind: str) -> str:
        """A data set of `kind` (folder, cifar10, cifar100) that validation accepts: the right file
        names, empty files (so only what is checked before a trial starts is checked)."""
        if kind not in self._standins:
            if kind == "folder":  # 10 classes, 500 train / 100 test images each (the laptop study's subset fits)
                path = self.root / "standin" / "cifar10-jpeg.tar.gz"
                path.parent.mkdir(parents=True, exist_ok=True)
                with tarfile.open(path, "w:gz") as tar:
                    for split, n in (("train", 500), ("test", 100)):
                        for c in range(10):
                            for i in range(n):
                                tar.addfile(tarfile.TarInfo(f"cifar10-jpeg/{split}/class{c}/{i:04d}.jpg"))
            else:  # torchvision's layout of the CIFAR archives, extracted
                folder, names = self.CIFAR[kind]
                path = self.root / "standin" / kind
                (path / folder).mkdir(parents=True)
                for name in names:
                    (path / folder / name).write_bytes(b"")
            self._standins[kind] = str(path)
        return self._standins[kind]

    def substitute(self, argv: list[str]) -> list[str]:
        out = []
        for word in argv:
            for placeholder, kind in self.PLACEHOLDERS.items():
                if placeholder in word:
                    word = word.replace(placeholder, self.standin(kind))
            out.append(word)
        return out

    def data_overrides(self, sweep: str, sets: list[str]) -> list[str]:
        """`--set` items that point a sweep's missing data at a stand-in, after the command's own."""
        keys = dict(item.split("=", 1) for item in sets)
        doc = yaml.safe_load((self.root / sweep).read_text()) if (self.root / sweep).is_file() else {}
        trial = {**(doc or {}).get("trial", {}), **keys}
        dataset, data_dir = str(trial.get("dataset", "planted")), str(trial.get("data_dir", "data"))
        if dataset in ("planted", "digits") or str(trial.get("download", "false")).lower() == "true" \
                or (self.root / data_dir).exists():
            return sets
        return [*sets, f"data_dir={self.standin(dataset)}"]


# -- running programs in this process -----------------------------------------------------------

def bnsweep(argv: list[str]) -> str:
    """Run `bnsweep argv` in this process; it must exit 0. Returns what it printed."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = generate.entry_point("bnsweep")(argv)
        except SystemExit as exit_:  # argparse: an unknown option or subcommand
            status = exit_.code
    assert not status, f"bnsweep {shlex.join(argv)} exited {status}:\n{err.getvalue()}{out.getvalue()}"
    return out.getvalue()


def parse_only(run: Callable[[], object], what: str) -> argparse.Namespace:
    """Run a program only until its argument parser has read the command line."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        with generate.stop_at_parser(parse=True):
            try:
                run()
            except generate.Parsed as parsed:
                return parsed.namespace
            except SystemExit as exit_:
                pytest.fail(f"{what}: its parser refused the command line (exit {exit_.code}):\n{err.getvalue()}")
    pytest.fail(f"{what}: returned without parsing a command line")


def run_script(path: Path, argv: list[str]) -> None:
    """Run a script as `python path argv...` would, in this process."""
    saved = sys.argv
    sys.argv = [str(path), *argv]
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            runpy.run_path(str(path), run_name="__main__")
    except SystemExit as exit_:
        assert not exit_.code, f"python {path.name} {shlex.join(argv)} exited {exit_.code}"
    finally:
        sys.argv = saved


# -- the rules ----------------------------------------------------------------------------------

# Trial keys added to `bnsweep train --set` (before the command's own, which win) so a trial takes
# about a second; `bnsweep eval` gets small-sample options after the command's (which they override).
SMALL_TRIAL = ["n_train=64", "n_test=32", "eval_n=16", "batch_size=32", "width=0.25", "epochs=1",
               "eval_steps=1", "final_steps=1", "device=cpu"]
SMALL_EVAL = ["--n", "16", "--steps", "2", "--device", "cpu"]


def check_bnsweep(cmd: Command, ws: Workspace) -> None:
    """Real, as written (reads the generated sweep, writes into the workspace)."""
    bnsweep(ws.substitute(cmd.argv[1:]))


def check_bnsweep_validate(cmd: Command, ws: Workspace) -> None:
    """Real, with missing data pointed at a stand-in (validation reads the data's file names)."""
    argv = ws.substitute(cmd.argv[1:])
    args = parse_only(lambda: generate.entry_point("bnsweep")(argv), str(cmd))
    sets = ws.data_overrides(args.sweep, args.set or []) if args.sweep and not args.keys else []
    bnsweep([*argv, "--set", *sets] if sets else argv)


def check_bnsweep_run(cmd: Command, ws: Workspace) -> None:
    """Parsed by `run`'s parser, then its sweep file with its `--set` keys validated for real (a run
    would start Ray and train for minutes)."""
    argv = ws.substitute(cmd.argv[1:])
    args = parse_only(lambda: generate.entry_point("bnsweep")(argv), str(cmd))
    sets = ws.data_overrides(args.sweep, args.set or [])
    bnsweep(["validate", args.sweep, *(["--set", *sets] if sets else [])])


def check_bnsweep_train(cmd: Command, ws: Workspace) -> None:
    """Real, on small data (SMALL_TRIAL), so the files it writes are there for the next command."""
    argv = ws.substitute(cmd.argv[1:])
    if "--set" in argv:
        i = argv.index("--set") + 1
        argv[i:i] = SMALL_TRIAL
    else:
        argv += ["--set", *SMALL_TRIAL]
    bnsweep(argv)


def check_bnsweep_eval(cmd: Command, ws: Workspace) -> None:
    """Real, on 16 test examples (SMALL_EVAL)."""
    bnsweep([*ws.substitute(cmd.argv[1:]), *SMALL_EVAL])


def check_bnsweep_prune(cmd: Command, ws: Workspace) -> None:
    """Real, on the workspace's copy of the sweep, with `--yes` (there is no terminal to ask on)."""
    argv = ws.substitute(cmd.argv[1:])
    bnsweep(argv if "--yes" in argv else [*argv, "--yes"])


def check_bnsweep_record(cmd: Command, ws: Workspace) -> None:
    """Real, into the workspace: an experiment that an earlier command of the block would have run
    (`bnsweep run ... --storage /tmp/x`, only validated here) is the workspace's finished sweep of
    that name; `--allow-dirty`, since the tests may run from a checkout with uncommitted changes."""
    argv = ws.substitute(cmd.argv[1:])
    args = parse_only(lambda: generate.entry_point("bnsweep")(argv), str(cmd))
    if Path(args.experiment).is_absolute() or not (ws.root / args.experiment).exists():
        argv[argv.index(args.experiment)] = str(ws.root / "results" / Path(args.experiment).name)
    out = ws.root / args.output
    assert out.resolve().is_relative_to(ws.root.resolve()), f"{cmd}: writes outside the workspace"
    bnsweep([*argv, "--allow-dirty"] if "--allow-dirty" not in argv else argv)
    assert (out / "record.json").is_file()


def check_bnsweep_quote(cmd: Command, ws: Workspace) -> None:
    """Parsed, then the named files of the repository checked against their records, never
    rewritten (`bnsweep quote FILE --check`)."""
    from bnsweep.results import quote

    args = parse_only(lambda: generate.entry_point("bnsweep")(cmd.argv[1:]), str(cmd))
    for name in args.files:
        doc = REPO / name
        assert doc.is_file(), f"{cmd}: {name} is not in the repository"
        specs = [m["spec"] for m in quote.blocks(doc.read_text())]
        assert specs, f"{cmd}: {name} quotes no record"
        bnsweep(["quote", str(doc), "--check"])


def check_parse_bnsweep(cmd: Command, ws: Workspace) -> None:
    """Parsed only (it would start Ray)."""
    argv = ws.substitute(cmd.argv[1:])
    parse_only(lambda: generate.entry_point("bnsweep")(argv), str(cmd))


def check_bench(cmd: Command, ws: Workspace) -> None:
    """Parsed only by the benchmark's parser (tests/test_bench.py runs its parts)."""
    parse_only(lambda: generate.entry_point("python -m bnsweep.bench")(cmd.argv[3:]), str(cmd))


def check_analysis(cmd: Command, ws: Workspace) -> None:
    """Real, on the generated sweep at results/demo."""
    run_script(REPO / cmd.argv[1], ws.substitute(cmd.argv[2:]))


def check_script_parse(cmd: Command, ws: Workspace) -> None:
    """Parsed only by the script's own parser (it downloads or installs)."""
    parse_only(lambda: run_script(REPO / cmd.argv[1], cmd.argv[2:]), str(cmd))


PIP_PARSE = """import json, sys
from pip._internal.commands import create_command
options, args = create_command("install").parse_args(sys.argv[1:])
print(json.dumps([options.editables, args]))"""


def check_pip_install(cmd: Command, ws: Workspace) -> None:
    """Not run: pip's parser accepts the options, a local project exists and its extras are declared.
    pip parses in a child process: importing pip here would leave setuptools unable to import in this
    one (setuptools' distutils shim stands down for good once pip is imported), and torch.compile
    imports setuptools."""
    parsed = subprocess.run([sys.executable, "-c", PIP_PARSE, *cmd.argv[2:]], capture_output=True, text=True)
    assert parsed.returncode == 0, f"{cmd}: pip's parser refuses it: {parsed.stderr.strip()[-500:]}"
    editables, args = json.loads(parsed.stdout)
    extras = set(_pyproject()["project"]["optional-dependencies"])
    for spec in [*editables, *args]:
        if spec == "bnsweep":
            continue
        m = re.fullmatch(r"(?P<path>[^\[]+)(?:\[(?P<extras>[^\]]*)\])?", spec)
        assert m and (REPO / m["path"]).resolve() == REPO, f"{cmd}: {spec} is not this project"
        missing = set(filter(None, (m["extras"] or "").split(","))) - extras
        assert not missing, f"{cmd}: extras {missing} are not declared in pyproject.toml"


def check_pytest(cmd: Command, ws: Workspace) -> None:
    """Not run (it is this suite): the paths exist, the markers are declared, the variables are read."""
    markers = {line.split(":")[0].strip(' "') for line in _pyproject()["tool"]["pytest"]["ini_options"]["markers"]}
    argv = cmd.argv[1:]
    for i, word in enumerate(argv):
        if word == "-m":
            assert set(re.findall(r"\w+", argv[i + 1])) - {"not", "and", "or"} <= markers, f"{cmd}: marker"
        elif not word.startswith("-") and (i == 0 or argv[i - 1] != "-m"):
            assert (REPO / word).exists(), f"{cmd}: {word} does not exist"
    tests = "".join(p.read_text() for p in (REPO / "tests").glob("*.py"))
    for name in cmd.env:
        assert name in tests, f"{cmd}: no test reads {name}"


def check_tensorboard(cmd: Command, ws: Workspace) -> None:
    """Not run (a server): TensorBoard's parser accepts the flags and a local log directory exists."""
    from tensorboard import program  # noqa: PLC0415

    tb = program.TensorBoard()
    with contextlib.redirect_stderr(io.StringIO()):
        tb.configure(argv=cmd.argv)
    logdir = tb.flags.logdir
    assert "://" in logdir or (ws.root / logdir).is_dir(), f"{cmd}: {logdir} is not an experiment directory"


def check_ray(cmd: Command, ws: Workspace) -> None:
    """Not run (it starts a cluster): Ray's command-line parser accepts the options."""
    from ray.scripts import scripts  # noqa: PLC0415

    command = scripts.cli.commands[cmd.argv[1]]
    command.make_context(cmd.argv[1], list(cmd.argv[2:]), resilient_parsing=False)


# command prefix -> how it is checked (the first match wins; a prefix ending in "/" is a path prefix)
RULES: list[tuple[str, Callable[[Command, Workspace], None]]] = [
    ("bnsweep run", check_bnsweep_run),
    ("bnsweep resume", check_parse_bnsweep),
    ("bnsweep validate", check_bnsweep_validate),
    ("bnsweep train", check_bnsweep_train),
    ("bnsweep eval", check_bnsweep_eval),
    ("bnsweep prune", check_bnsweep_prune),
    ("bnsweep layers", check_bnsweep),
    ("bnsweep status", check_bnsweep),
    ("bnsweep results", check_bnsweep),
    ("bnsweep table", check_bnsweep),
    ("bnsweep report", check_bnsweep),
    ("bnsweep plot", check_bnsweep),
    ("bnsweep record", check_bnsweep_record),
    ("bnsweep quote", check_bnsweep_quote),
    ("python -m bnsweep.bench", check_bench),
    ("python analysis/", check_analysis),
    ("python scripts/", check_script_parse),
    ("pip install", check_pip_install),
    ("pytest", check_pytest),
    ("tensorboard", check_tensorboard),
    ("ray start", check_ray),
    ("ray up", check_ray),
    ("mkdocs serve", lambda cmd, ws: None),  # a server; test_site_builds builds what it serves
    ("mkdocs build", lambda cmd, ws: None),  # test_site_builds does it
]


def rule_for(cmd: Command) -> Callable[[Command, Workspace], None]:
    text = str(cmd)
    for prefix, check in RULES:
        if text.startswith(prefix) if prefix.endswith("/") else (text == prefix or text.startswith(prefix + " ")):
            return check
    pytest.fail(f"{cmd.where}: no rule in tests/test_docs.py RULES covers `{cmd}`; add one that checks it "
                "cheaply but meaningfully")


def _pyproject() -> dict:
    try:
        import tomllib  # noqa: PLC0415
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((REPO / "pyproject.toml").read_text())


# -- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    """A finished two-stage sweep like the demo's (made-up numbers), marked finished as `bnsweep run`
    leaves it, so `bnsweep status --watch` returns."""
    from bnsweep.testing import write_example_sweep

    root = write_example_sweep(tmp_path_factory.mktemp("example") / "demo")
    sweep = (root / "sweep.yaml").read_text()
    state = {"stages": {s: {"finished": True, "trials": [], "checkpoints": {}} for s in ("pretrain", "adv")},
             "sweep_sha256": hashlib.sha256(sweep.encode()).hexdigest()}
    (root / "bnsweep_state.json").write_text(json.dumps(state))
    return root


@pytest.fixture
def workspace(tmp_path, example, monkeypatch) -> Iterator[Workspace]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: a second thread only contends (10x slower on a shared machine)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BNSWEEP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    yield Workspace(tmp_path, example)
    torch.set_num_threads(threads)


def _block_id(block: Block) -> str:
    return f"{block.where}-{block.lang or 'text'}"


def _distinct(found: list[Block]) -> list[Block]:
    """The blocks, each text once (the README and a page may show the same block): the first kept."""
    seen: dict[tuple[str, str], Block] = {}
    for block in found:
        seen.setdefault((block.lang, block.body.strip()), block)
    return list(seen.values())


SHELL_BLOCKS = _distinct([b for b in all_blocks() if b.lang in SHELL or (b.lang in PROMPTED and commands(b))])
PYTHON_BLOCKS = _distinct([b for b in all_blocks() if b.lang == "python"])
YAML_BLOCKS = _distinct([b for b in all_blocks() if b.lang == "yaml"])


# -- the blocks run -----------------------------------------------------------------------------

PASSED: set[tuple[str, ...]] = set()  # command lines (with those before them in their block) that passed


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=_block_id)
def test_shell_block_runs(block, workspace, monkeypatch):
    """Each command of the block, in order, by its rule. A block whose every command already passed
    after the same earlier commands (the README and a page share lines) is not run again."""
    lines = [str(c) for c in commands(block)]
    runs = {tuple(lines[:i + 1]) for i in range(len(lines))}
    if runs <= PASSED:
        return
    for cmd in commands(block):
        check = rule_for(cmd)
        for key, value in cmd.env.items():
            monkeypatch.setenv(key, value)
        try:
            check(cmd, workspace)
        except AssertionError as err:
            raise AssertionError(f"{cmd.where}: `{cmd}` ({check.__name__}): {err}") from None
    PASSED.update(runs)


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=_block_id)
def test_python_block_runs(block, workspace):
    """Run as written, in the workspace (where results/demo is the generated sweep)."""
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(block.body, block.where, "exec"), {"__name__": "__docs__"})


@pytest.mark.parametrize("block", YAML_BLOCKS, ids=_block_id)
def test_yaml_block_is_a_valid_sweep(block, workspace):
    """Every YAML block is a sweep file: `bnsweep validate` accepts it."""
    (workspace.root / "shown.yaml").write_text(block.body)
    bnsweep(["validate", "shown.yaml"])


def test_blocks_are_found():
    """The extraction sees the blocks it should (a broken pattern would make every test above vacuous)."""
    where = {b.where.split(":")[0] for b in SHELL_BLOCKS}
    assert {"README.md", "docs/getting-started.md", "docs/guides/analysis.md", "docs/guides/cluster.md"} <= where
    assert len(SHELL_BLOCKS) >= 20 and PYTHON_BLOCKS and YAML_BLOCKS
    status = next(b for b in all_blocks() if "$ bnsweep status" in b.body and b.path.name != "README.md")
    assert [str(c) for c in commands(status)] == ["bnsweep status results/demo"]
    chained = Block(REPO / "x.md", 1, "bash", 'A=1 pip install -e ".[test]" && pytest  # tests\nb \\\n  --c d\n')
    assert [(c.argv, c.env) for c in commands(chained)] == [
        (["pip", "install", "-e", ".[test]"], {"A": "1"}), (["pytest"], {}), (["b", "--c", "d"], {})]


def test_checking_a_pip_command_keeps_pip_out_of_this_process(workspace):
    """torch.compile imports setuptools, which cannot import in a process that imported pip (its
    distutils shim stands down): pip's parser runs in a child, and a refused option still fails."""
    check_pip_install(Command(["pip", "install", "-e", ".[test]"]), workspace)
    assert "pip" not in sys.modules
    with pytest.raises(AssertionError, match="pip's parser refuses it"):
        check_pip_install(Command(["pip", "install", "--no-such-option", "-e", "."]), workspace)
    with pytest.raises(AssertionError, match="extras"):
        check_pip_install(Command(["pip", "install", "-e", ".[nosuchextra]"]), workspace)


def test_a_command_without_a_rule_fails():
    with pytest.raises(pytest.fail.Exception, match="no rule"):
        rule_for(Command(["make", "everything"], where="x.md:1"))


def test_a_renamed_option_fails(workspace):
    """What the rules exist for: a command the parser no longer accepts fails its block."""
    for text in ("bnsweep run sweeps/demo.yaml --storrage x", "bnsweep resume results/demo --adress x",
                 "python -m bnsweep.bench --part nothing"):
        cmd = commands(Block(REPO / "x.md", 1, "bash", text))[0]
        with pytest.raises((AssertionError, pytest.fail.Exception)):
            rule_for(cmd)(cmd, workspace)


# -- names and paths the docs mention -----------------------------------------------------------

DOTTED = re.compile(r"(?<![\w./-])bnsweep(?:\.[A-Za-z_]\w*)+")
REPO_PATH = re.compile(r"(?<![\w./-])(?:bnsweep|tests|sweeps|analysis|scripts|docs|\.ci)/[\w./-]*\w")
PACKAGE_PATH = re.compile(r"(?<![\w./-])(?:core|sweep|results|bench)/\w+\.py\b")


def _resolves(name: str) -> bool:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


def _mentions(pattern: re.Pattern) -> list[tuple[str, str]]:
    return sorted({(p.relative_to(REPO).as_posix(), m[0]) for p in DOC_FILES for m in pattern.finditer(p.read_text())})


def _params(pairs):
    return [pytest.param(doc, name, id=f"{doc}:{name}") for doc, name in pairs]


@pytest.mark.parametrize(("doc", "name"), _params(_mentions(DOTTED)))
def test_dotted_name_resolves(doc, name):
    assert _resolves(name), f"{doc} names {name}, which does not import"


@pytest.mark.parametrize(("doc", "path"), _params(_mentions(REPO_PATH)))
def test_repository_path_exists(doc, path):
    assert (REPO / path).exists(), f"{doc} names {path}, which is not in the repository"


@pytest.mark.parametrize(("doc", "path"), _params(_mentions(PACKAGE_PATH)))
def test_package_path_exists(doc, path):
    assert (REPO / "bnsweep" / path).exists(), f"{doc} names {path}, which is not in bnsweep/"


def test_dangling_names_are_caught():
    assert _resolves("bnsweep.core.data.make_planted") and _resolves("bnsweep.bench")
    assert not _resolves("bnsweep.data.make_planted") and not _resolves("bnsweep.core.data.make_plated")


# -- the generated references and the built site ------------------------------------------------

def test_programs_are_the_console_script():
    assert generate.PROGRAMS["bnsweep"] == _pyproject()["project"]["scripts"]["bnsweep"]


def _toy_program(argv):
    p = argparse.ArgumentParser(prog="toy", description="A toy.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("go", help="go somewhere", description="Go.")
    s.add_argument("where")
    s.add_argument("--brand-new-option", type=float, default=2.5, help="added | today")
    p.parse_args(argv)


def test_generated_cli_reference_follows_the_parser(monkeypatch):
    """An option added to a parser appears, with its default and help, without touching the docs."""
    monkeypatch.setitem(generate.PROGRAMS, "toy", f"{__name__}:_toy_program")
    text = generate.cli_reference("toy")
    assert "## `toy go` { #toy-go }" in text
    assert r"| `--brand-new-option` `BRAND_NEW_OPTION` | `2.5` | added \| today |" in text
    assert "| `where` |  |  |" in text


def test_unknown_marker_fails():
    with pytest.raises(ValueError, match="unknown marker"):
        generate.expand("<!-- generated: nonsense -->\n", "x.md")


def _walk(parser: argparse.ArgumentParser, name: str):
    """(section id, parser) for a program and each of its subcommands."""
    yield name.replace(" ", "-"), parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield f"{name.replace(' ', '-')}-{sub_name}", sub


def _section(page: str, anchor: str) -> str:
    start = page.index(f'id="{anchor}"')
    end = page.find("<h2", start + 1)
    return page[start:end if end > 0 else len(page)]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built strictly as CI builds it."""
    pytest.importorskip("mkdocs", reason="the docs extra: pip install -e '.[docs]'")
    from mkdocs.commands.build import build
    from mkdocs.config import load_config

    out = tmp_path_factory.mktemp("site")
    config = load_config(config_file=str(REPO / "mkdocs.yml"), site_dir=str(out), strict=True)
    build(config)
    return out


def test_site_builds(site):
    for page in ("index.html", "reference/cli/index.html", "reference/api/index.html",
                 "reference/trial-keys/index.html", "contributing/index.html"):
        assert (site / page).is_file(), page


def test_site_shows_every_option_of_every_parser(site):
    import html

    page = html.unescape((site / "reference" / "cli" / "index.html").read_text())
    for program in generate.PROGRAMS:
        for anchor, parser in _walk(generate.parser_of(program), program):
            section = _section(page, anchor) if anchor != program.replace(" ", "-") else page
            for action in parser._actions:
                if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                    continue
                names = action.option_strings or [action.metavar or action.dest]
                for name in names:
                    assert name in section, f"{anchor}: {name} missing from the built CLI reference"
                if action.option_strings and action.nargs != 0 and action.default not in (None, argparse.SUPPRESS):
                    shown = action.default if not isinstance(action.default, float) else f"{action.default:g}"
                    assert str(shown) in section or isinstance(action.default, list), f"{anchor}: default of {names[0]}"


def test_site_shows_every_trial_key(site):
    page = (site / "reference" / "trial-keys" / "index.html").read_text()
    keys = re.findall(r"^\| `(\w+)` \|", bnsweep(["validate", "--keys"]), re.MULTILINE)
    assert len(keys) > 30
    for key in keys:
        assert f"<code>{key}</code>" in page, key


def test_site_shows_every_module(site):
    page = (site / "contributing" / "index.html").read_text()
    for path in (REPO / "bnsweep").rglob("*.py"):
        if path.name != "__main__.py":
            rel = path.relative_to(REPO)
            name = str(rel.parent if path.name == "__init__.py" else rel.with_suffix("")).replace("/", ".")
            assert f"<code>{name}</code>" in page, name


def test_site_documents_the_api(site):
    page = (site / "reference" / "api" / "index.html").read_text()
    for name in ("bnsweep.results.load.load", "bnsweep.results.load.history", "bnsweep.core.data.make_planted",
                 "bnsweep.core.config.TrialConfig", "bnsweep.results.tables.summarize"):
        assert f'id="{name}"' in page, name


def test_every_result_column_is_documented(example):
    """Every column `results.load` gives (on a generated sweep) is named on the columns page."""
    from bnsweep import results

    text = (REPO / "docs" / "reference" / "columns.md").read_text()
    documented = set(re.findall(r"`([\w/{}]+)`", text)) | set(re.findall(
        r"^\| `(\w+)` \|", generate.trial_keys(), re.MULTILINE))
    columns = set(results.load(str(example)).columns) | set(results.history(str(example)).columns)
    columns = {re.sub(r"^robust_acc_eps[\d.]+$", "robust_acc_eps{E}", c) for c in columns}
    assert columns - documented == set()


def test_every_sweep_file_key_is_documented():
    from bnsweep.layout.plans import ASHA_KEYS, STAGE_KEYS, TOP_KEYS
    from bnsweep.sweep.spec import SEARCH_KINDS

    text = (REPO / "docs" / "reference" / "sweep-files.md").read_text()
    for key in {*TOP_KEYS, *STAGE_KEYS, *SEARCH_KINDS, *ASHA_KEYS}:
        assert re.search(rf"\b{key}\b", text), key
