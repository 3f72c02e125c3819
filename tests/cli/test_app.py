"""cli/app.py and cli/common.py, the command line as a whole: a clean --help, shell
completion, a lazy torch, and one line on stderr for every mistake (exit 2 for usage, 1
otherwise), never a traceback, nothing written."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from toygpt_cli.runs.checkpoint import read_checkpoint, save_checkpoint

from ..cli_helpers import toygpt
from ..conftest import FIXTURE_CORPUS, TINY_ARGS

COMMANDS = [[], ["train"], ["sample"], ["eval"], ["bench"], ["export"], ["runs", "list"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "toygpt")
def test_help_shows_flags_without_a_value_and_plain_defaults(command):
    r = toygpt(*command, "--help")
    assert r.exit_code == 0, r.stderr
    assert "--help" in r.stdout
    assert "<bool>" not in r.stdout  # typer 0.29 put it after every flag
    assert "[default: (" not in r.stdout  # a show_default string, parenthesised by typer


@pytest.mark.parametrize("args", [[], ["data"], ["sweep"]])
def test_a_command_group_alone_shows_its_help_without_an_empty_error(args):
    r = toygpt(*args)
    assert r.exit_code in (0, 2)  # click's own code: 2 from click 8.2 on
    assert "Usage" in r.stdout + r.stderr and "error" not in r.stdout + r.stderr


def test_each_command_sums_itself_up_in_one_line():
    """A command list shows the first paragraph of its help with the docstring's breaks."""
    import typer

    from toygpt_cli.cli.app import app

    def walk(cmd):
        yield cmd
        for sub in getattr(cmd, "commands", {}).values():
            yield from walk(sub)

    for cmd in walk(typer.main.get_command(app)):
        first = (cmd.help or "").split("\n\n")[0]
        assert "\n" not in first.strip(), (cmd.name, first)


def test_completion_is_installable():
    assert "--install-completion" in toygpt("--help").stdout
    r = toygpt("--show-completion", "bash")
    assert r.exit_code == 0 and "_TOYGPT_COMPLETE=complete_bash" in r.stdout


def test_run_names_complete_in_the_shell(tmp_path):
    runs = tmp_path / "runs"
    for name in ("20260101-000000", "20260102-000000", ".staging"):
        (runs / name).mkdir(parents=True)
        (runs / name / "config.json").write_text("{}")
    env = {
        **os.environ,
        "TOYGPT_RUNS_DIR": str(runs),
        "_TOYGPT_COMPLETE": "complete_bash",
        "COMP_WORDS": "toygpt sample --run ",
        "COMP_CWORD": "3",
    }
    r = subprocess.run(
        [sys.executable, "-m", "toygpt_cli"], env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["latest", "20260102-000000", "20260101-000000"]
    env["COMP_WORDS"] = "toygpt eval --run 202601"
    r = subprocess.run(
        [sys.executable, "-m", "toygpt_cli"], env=env, capture_output=True, text=True, timeout=60
    )
    assert r.stdout.split() == ["20260102-000000", "20260101-000000"]


def test_help_does_not_import_torch():
    code = (
        "import sys; from toygpt_cli.cli.app import app; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_core_library_never_imports_typer_or_rich():
    code = (
        "import sys, pkgutil, importlib, toygpt_cli\n"
        "for m in pkgutil.iter_modules(toygpt_cli.__path__):\n"
        "    if m.name not in ('cli', '__main__'):\n"
        "        importlib.import_module('toygpt_cli.' + m.name)\n"
        "bad = [m for m in ('typer', 'rich', 'click') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _snapshot(*folders):
    state = {}
    for folder in folders:
        for root, _, files in os.walk(folder):
            for f in files:
                if f == ".lock":  # a trainer's lock: taken (and its pid written) first
                    continue
                p = os.path.join(root, f)
                state[p] = os.stat(p).st_mtime_ns
    return state


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A finished tiny run, plus odd files for the table to point at (made once: no case
    may change any of it)."""
    tmp_path = tmp_path_factory.mktemp("bad_input")
    data, runs = tmp_path / "data", tmp_path / "runs"
    corpus_file = tmp_path / "tiny.txt"
    corpus_file.write_text(FIXTURE_CORPUS.read_text(encoding="utf-8")[:30_000])
    env = {"TOYGPT_DATA_DIR": str(data), "TOYGPT_RUNS_DIR": str(runs), "CI": "1"}
    r = toygpt("train", "--data", corpus_file, *TINY_ARGS, "--iters", "4", "--eval-interval", "4",
               env=env)  # fmt: skip
    assert r.exit_code == 0, r.stderr
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    binary = tmp_path / "latin1.txt"
    binary.write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (runs / "20200101-000000").mkdir()  # a run that never got a checkpoint
    (runs / "20200101-000000" / "config.json").write_text(json.dumps({"name": "x"}))
    not_a_dir = tmp_path / "file.txt"
    not_a_dir.write_text("x")
    configs = {
        "toml_string": 'warmup_iters = "4"\n',
        "toml_float": "warmup_iters = 2.5\n",
        "toml_list": "[train]\nwarmup_iters = [1]\n",
        "toml_huge": "seed = 1e400\n",
        "toml_section": "[optim]\nlr = 1\n",
        "bad_toml": "n_layer = = 3\n",
    }
    files = {}
    for key, text in configs.items():
        files[key] = tmp_path / f"{key}.toml"
        files[key].write_text(text)
    for key, text in (("json_list", "[1, 2]"), ("json_string", '"n_layer"')):
        files[key] = tmp_path / f"{key}.json"
        files[key].write_text(text)
    return {
        **files,
        "env": env,
        "corpus": corpus_file,
        "empty": empty,
        "latin1": binary,
        "file": not_a_dir,
        "runs": runs,
        "data": data,
    }


TRAIN = ("train", "--iters", "5", *TINY_ARGS)

CASES = [
    # (id, args, expected message, exit code)
    (
        "heads",
        [*TRAIN, "--n-embd", "30", "--n-head", "4"],
        r"--n-embd \(30\) must be divisible by --n-head \(4\); try --n-head 3",
        2,
    ),
    ("zero batch", [*TRAIN, "--batch-size", "0"], "--batch-size must be greater than 0", 2),
    (
        "rope odd head",
        [*TRAIN, "--n-embd", "36", "--n-head", "4", "--pos", "rope"],
        r"--pos rope needs an even head size \(--n-embd / --n-head\), got 36/4 = 9",
        2,
    ),
    ("negative lr", [*TRAIN, "--lr", "-0.1"], "--learning-rate must be greater than 0", 2),
    ("zero interval", [*TRAIN, "--eval-interval", "0"], "--eval-interval must be greater", 2),
    ("negative iters", [*TRAIN, "--iters", "-3"], "--iters must be 0 or more, got -3", 2),
    ("zero block", [*TRAIN, "--block-size", "0"], "--block-size must be greater than 0", 2),
    ("dropout 1", [*TRAIN, "--dropout", "1.0"], r"dropout must be in \[0, 1\)", 2),
    ("beta2 1", [*TRAIN, "--beta2", "1"], r"beta2 must be in \[0, 1\), got 1$", 2),
    (
        "block > val",
        [*TRAIN, "--block-size", "5000"],
        r"--block-size \(5000\) must be shorter than the val split",
        2,
    ),
    ("unknown device", [*TRAIN, "--device", "tpu"], "--device must be auto, .*; got 'tpu'", 2),
    # cuda:99 is refused on a CPU machine (no CUDA) and on a GPU machine (no 100th GPU) alike
    ("no cuda", [*TRAIN, "--device", "cuda:99"], "CUDA is not available|cuda:99 does not", 1),
    ("no mps", [*TRAIN, "--device", "mps"], r"MPS \(Apple GPU\) is not available", 1),
    (
        "missing data",
        [*TRAIN, "--data", "/nonexistent/x.txt"],
        "data file not found: /nonexistent/x.txt",
        1,
    ),
    ("empty data", [*TRAIN, "--data", "{empty}"], "data file is empty", 1),
    ("not utf-8", [*TRAIN, "--data", "{latin1}"], "data file is not UTF-8 text", 1),
    ("bad max-time", [*TRAIN, "--max-time", "soon"], "--max-time must look like", 2),
    ("unknown preset", [*TRAIN, "--preset", "turbo"], "--preset must be one of seed, .*'turbo'", 2),
    (
        "unwritable runs dir",
        [*TRAIN, "--runs-dir", "{file}/runs"],
        "cannot create a run in .*file.txt/runs: Not a directory",
        1,
    ),
    ("unknown run", ["sample", "--run", "nope"], r"no run 'nope'; runs in .*/: 20", 1),
    # a command that needs names is told so, as click says it, in toygpt's own case
    ("rm nothing", ["runs", "rm"], r"missing argument 'RUNS\.\.\.' \(see `toygpt runs rm", 2),
    ("compare nothing", ["runs", "compare"], r"missing argument 'RUNS\.\.\.'", 2),
    ("compare one", ["runs", "compare", "latest"], "compare needs at least two runs", 2),
    ("sweep nameless", ["sweep", "run"], r"missing argument 'NAME' \(see `toygpt sweep run", 2),
    ("sweep show nameless", ["sweep", "show"], r"missing argument 'NAME'", 2),
    ("trial numberless", ["sweep", "trial", "x"], r"missing argument 'TRIAL'", 2),
    ("no checkpoint", ["sample", "--run", "20200101-000000"], "has no ckpt.pt checkpoint", 1),
    ("bad prompt", ["sample", "--prompt", "Zq~"], "outside the run's vocabulary: 'Z' '~'", 2),
    (
        "temperature",
        ["sample", "--temperature", "-1"],
        "--temperature must be 0 or more, got -1",
        2,
    ),
    ("top-k", ["sample", "--top-k", "-1"], "--top-k must be 0 or more", 2),
    ("top-p", ["sample", "--top-p", "0"], "--top-p must be greater than 0", 2),
    ("min-p", ["sample", "--min-p", "1.5"], "--min-p must be at most 1", 2),
    ("no count", ["sample", "-n", "0"], "--max-new-tokens must be greater than 0", 2),
    ("huge count", ["sample", "--num-samples", "100000000"], "--num-samples must be at most", 2),
    ("unknown option", ["sample", "--bogus"], r"no such option: --bogus \(see `toygpt sample", 2),
    ("option with dots", ["sample", "--bogus.."], r"no such option: --bogus\.\. \(see", 2),
    ("not a number", ["sample", "-n", "abc"], "'abc' is not a valid int", 2),
    ("threads", ["sample", "--threads", "99999"], "more than the .* CPUs", 2),
    ("bench forever", ["bench", "--seconds", "inf"], "--seconds must be a finite number", 2),
    ("bench nan", ["bench", "--seconds", "nan"], "--seconds must be a finite number", 2),
    ("nproc", [*TRAIN, "--nproc", "1000"], "--nproc must be at most 64", 2),
    ("huge max-time", [*TRAIN, "--max-time", "1e300h"], "--max-time is too long", 2),
    ("offsets and max-chars", ["eval", "--offsets", "4", "--max-chars", "100"], "--offsets", 2),
    ("resume unknown", ["train", "--resume", "nope"], "no run 'nope'", 1),
    (
        "resume arch",
        ["train", "--resume", "--n-layer", "3"],
        "with --n-layer 3: it is 2 in the run, and --n-layer is fixed",
        2,
    ),
    ("resume steps", ["train", "--resume", "--steps", "0"], "--steps must be greater than 0", 2),
    (
        "eval split",
        ["eval", "--split", "test"],
        "--split must be one of train, val, both; got 'test'",
        2,
    ),
    # Numbers that are not numbers, and sizes that cannot fit: refused before any work.
    ("nan lr", [*TRAIN, "--lr", "nan"], "--learning-rate must be a finite number, got nan", 2),
    ("inf lr", [*TRAIN, "--lr", "inf"], "--learning-rate must be a finite number", 2),
    ("nan decay", [*TRAIN, "--weight-decay", "nan"], "--weight-decay must be a finite", 2),
    ("nan min-lr", [*TRAIN, "--min-lr", "nan"], "--min-lr must be a finite number", 2),
    ("nan max-time", [*TRAIN, "--max-time", "nan"], "--max-time must be a finite number", 2),
    ("huge seed", [*TRAIN, "--seed", "99999999999999999999999"], "--seed is out of range", 2),
    ("tiny train split", [*TRAIN, "--val-fraction", "0.99999999"], "shorter than the train", 2),
    ("huge width", [*TRAIN, "--n-embd", "16384", "--n-head", "1"], "needs about .* GiB", 1),
    (
        "absurd width",
        [*TRAIN, "--n-embd", "1000000"],
        "--n-embd must be at most 65536, got 1000000",
        2,
    ),
    ("huge batch", [*TRAIN, "--batch-size", "1000000000"], "needs about .* GiB", 1),
    ("huge eval", [*TRAIN, "--eval-iters", "1000000000"], "--eval-iters must be at most", 2),
    ("steps alone", [*TRAIN, "--steps", "5"], "--steps goes with --resume", 2),
    (
        "absurd width, odd heads",
        [*TRAIN, "--n-embd", "1000000000000", "--n-head", "7"],
        "--n-embd must be at most 65536",
        2,
    ),
    ("indivisible", [*TRAIN, "--n-embd", "1000", "--n-head", "7"], "divisible by --n-head", 2),
    ("resume seed", ["train", "--resume", "--seed", "7"], "--seed is fixed for the life of", 2),
    ("resume split", ["train", "--resume", "--val-fraction", "0.2"], "--val-fraction is fixed", 2),
    ("resume iters", ["train", "--resume", "--iters", "9"], "--iters is the length of a new", 2),
    (
        "toml string",
        [*TRAIN, "--config", "{toml_string}"],
        "toml_string.toml: warmup_iters must be an integer",
        2,
    ),
    (
        "toml float",
        [*TRAIN, "--config", "{toml_float}"],
        "warmup_iters must be an integer, got 2.5",
        2,
    ),
    (
        "toml list",
        [*TRAIN, "--config", "{toml_list}"],
        r"warmup_iters must be an integer, got \[1\]",
        2,
    ),
    ("toml huge", [*TRAIN, "--config", "{toml_huge}"], "seed must be an integer, got inf", 2),
    (
        "toml overridden",
        [*TRAIN, "--config", "{toml_string}", "--warmup-iters", "3"],
        "toml_string.toml: warmup_iters",
        2,
    ),
    ("runs dir too long", ["runs", "--runs-dir", "x" * 5000], "File name too long: xxx", 1),
    ("toml section", [*TRAIN, "--config", "{toml_section}"], r"unknown section \[optim\]", 2),
    ("json list", [*TRAIN, "--config", "{json_list}"], "must hold a table of options", 2),
    ("json string", [*TRAIN, "--config", "{json_string}"], "must hold a table of options", 2),
    ("bad toml", [*TRAIN, "--config", "{bad_toml}"], "cannot parse config file", 2),
]


@pytest.fixture
def setup(prepared, monkeypatch):
    for key, value in prepared["env"].items():
        monkeypatch.setenv(key, value)
    return prepared


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(setup, case):
    name, args, message, code = case
    if name == "no mps" and torch.backends.mps.is_available():
        pytest.skip("an Apple GPU is here")
    args = [a.format(**setup) for a in args]
    if "--data" not in args and args[0] == "train" and "--resume" not in args:
        args += ["--data", str(setup["corpus"])]
    before = _snapshot(setup["runs"], setup["data"])
    r = toygpt(*args)
    assert r.exit_code == code, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ")
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in r.stderr
    assert _snapshot(setup["runs"], setup["data"]) == before


def test_disk_full_during_save_keeps_previous_checkpoint(dirs, corpus_file, monkeypatch):
    _, runs = dirs
    assert toygpt("train", "--data", corpus_file, *TINY_ARGS, "--iters", "4").exit_code == 0
    (run,) = runs.iterdir()
    before = (run / "ckpt.pt").read_bytes()
    real_save = torch.save

    def full_disk(obj, f, *a, **kw):
        real_save(obj, f, *a, **kw)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    r = toygpt("train", "--resume", "--steps", "4")
    assert r.exit_code == 1
    assert "could not write" in r.stderr and "No space left on device" in r.stderr
    assert (run / "ckpt.pt").read_bytes() == before
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    assert json.loads((run / "status.json").read_text())["status"] == "failed"


def _edit_checkpoint(path, edit):
    ckpt = read_checkpoint(path).data
    edit(ckpt)
    save_checkpoint(path, {k: v for k, v in ckpt.items() if k != "format"})


@pytest.mark.parametrize(
    "what, edit, message",
    [
        ("wider config", lambda c: c["model_config"].update(n_embd=64), "does not fit|damaged"),
        ("no state", lambda c: c.pop("state", None), "has no 'state'"),
        ("no rng", lambda c: c.pop("rng", None), "has no 'rng'"),
        ("bad step", lambda c: c["state"].update(step="ten"), "damaged: its step is 'ten'"),
        ("short vocab", lambda c: c.update(vocab="ab"), "vocabulary"),
    ],
)
def test_hand_made_checkpoints_are_one_line(dirs, corpus_file, what, edit, message):
    _, runs = dirs
    assert toygpt("train", "--data", corpus_file, *TINY_ARGS, "--iters", "2").exit_code == 0
    (run,) = [p for p in runs.iterdir() if not p.name.startswith(".")]
    for name in ("ckpt.pt", "best.pt"):
        _edit_checkpoint(run / name, edit)
    for args in (["train", "--resume", "--steps", "1"], ["sample", "-n", "5"]):
        r = toygpt(*args)
        if what in ("no state", "no rng", "bad step") and args[0] == "sample":
            continue  # sampling needs none of these
        assert r.exit_code == 1, (args, r.stdout, r.stderr)
        (line,) = r.stderr.strip().splitlines()[-1:]
        assert line.startswith("error: ") and "Traceback" not in r.stderr
        assert re.search(message, line), line


# -- output that cannot be written, and families of bad input -----------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ["runs", "--json"],
        ["runs"],
        ["runs", "show", "latest"],
        ["sample", "-n", "20", "--seed", "1"],
        ["sample", "-n", "20", "--seed", "1", "--json"],
        ["eval", "--split", "val", "--json"],
        ["data", "info", "{corpus}"],
        ["export", "-o", "{tmp}/m.safetensors", "--json"],
    ],
    ids=lambda a: " ".join(a),
)
def test_output_to_a_full_device_is_one_line(setup, args, tmp_path):
    if args[0] == "export":
        pytest.importorskip("safetensors")
    args = [a.format(corpus=setup["corpus"], tmp=tmp_path) for a in args]
    code = f"import sys; from toygpt_cli.cli.app import main; main({args!r})"
    env = {**os.environ, **setup["env"]}
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-c", code], stdout=full, stderr=subprocess.PIPE,
                              text=True, env=env, timeout=120)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: cannot write the output"), proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: "/dev/zero", "is not a regular file"),
        (lambda tmp: str(tmp), "is not a regular file"),
        (lambda tmp: _big(tmp / "big.toml"), "larger than 1,048,576 bytes"),
    ],
)
def test_a_config_that_is_not_a_small_regular_file_is_one_line(setup, tmp_path, make, message):
    r = toygpt(*TRAIN, "--data", setup["corpus"], "--config", make(tmp_path))
    assert r.exit_code == 2 and message in r.stderr and len(r.stderr.splitlines()) == 1


def _big(path):
    path.write_text("# " + "x" * (1 << 20) + "\n")
    return str(path)


@pytest.mark.parametrize("path", ["/proc/cpuinfo", "/proc/self/status"])
def test_a_proc_file_as_data_says_what_it_is(setup, path):
    r = toygpt(*TRAIN, "--data", path)
    assert r.exit_code == 1 and "reports no size (a /proc or /sys file)" in r.stderr


def test_out_of_memory_anywhere_is_one_line(setup, monkeypatch):
    from toygpt_cli.runs import session

    def no_memory(*a, **k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't "
                           "allocate memory: you tried to allocate 9999999 bytes.")  # fmt: skip

    monkeypatch.setattr(session, "Trainer", no_memory)
    r = toygpt(*TRAIN, "--data", setup["corpus"])
    assert r.exit_code == 1 and r.stderr.strip().startswith("error: out of memory")


def test_more_processes_than_the_machine_has_is_refused(setup):
    from toygpt_cli.device import usable_cpus

    r = toygpt(*TRAIN, "--data", setup["corpus"], "--nproc", str(usable_cpus() + 1))
    assert r.exit_code == 2 and "more processes than this machine's" in r.stderr


@pytest.mark.parametrize("ends_by", ["acting on it", "exiting"])
def test_a_ctrl_c_still_on_its_way_when_the_command_ends_is_dropped(monkeypatch, ends_by):
    """A Ctrl-C during an import is sent again a moment later; once the command has acted
    on it, or is exiting, that copy must not raise (a traceback after "stopped")."""
    from toygpt_cli import stopping
    from toygpt_cli.cli import common

    calls = iter([True])  # the first signal lands inside an import, later ones do not
    monkeypatch.setattr(common, "_importing", lambda frame: next(calls, False))
    monkeypatch.setattr(stopping, "RESEND_AFTER", 0.5)  # room for a slow machine
    previous = signal.getsignal(signal.SIGINT)
    try:
        common.watch_sigint()
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)  # handled: remembered, and a copy is due in 0.5 s
        assert common._RESENDS
        if ends_by == "acting on it":
            assert common.interrupted()
        else:
            common.settle_sigint()
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        try:
            time.sleep(1.0)
        except KeyboardInterrupt:
            pytest.fail("the copy sent after the import raised KeyboardInterrupt")
    finally:
        common.settle_sigint()
        signal.signal(signal.SIGINT, previous)
        common._SIGINT.clear()


@pytest.mark.parametrize(
    "where",
    ["reading the options", "in the command", "after the command", "in the command, then after"],
)
def test_a_ctrl_c_anywhere_in_the_command_line_says_stopped_once(monkeypatch, capsys, tmp_path,
                                                                 where):  # fmt: skip
    """typer answers a KeyboardInterrupt raised while it reads the options (or closes up after
    the command) with 130 and no word: 1 in 250 Ctrl-Cs a tenth of a second after start. One
    raised in the command is said by the command. Either way, and for a second Ctrl-C after
    the first was said, "stopped" once."""
    import typer.core

    from toygpt_cli.cli import app as app_module
    from toygpt_cli.cli import common, runs_cmd

    def ctrl_c(*args, **kwargs):
        common.on_sigint(signal.SIGINT, None)  # as the handler does, outside an import

    if where == "reading the options":
        real_context = typer.core.TyperGroup.make_context

        def make_context(self, *args, **kwargs):
            if self.name == "runs":
                ctrl_c()
            return real_context(self, *args, **kwargs)

        monkeypatch.setattr(typer.core.TyperGroup, "make_context", make_context)
    if where.startswith("in the command"):
        monkeypatch.setattr(runs_cmd, "paths", ctrl_c)  # the first thing `runs list` does
    if "after" in where:
        real_invoke = typer.core.TyperGroup.invoke

        def invoke(self, ctx):
            try:
                return real_invoke(self, ctx)
            finally:
                if self.name == "runs":  # the command has ended, typer has not
                    ctrl_c()

        monkeypatch.setattr(typer.core.TyperGroup, "invoke", invoke)
    previous = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit) as ended:
            app_module.main(["runs", "list", "--runs-dir", str(tmp_path)])
    finally:
        signal.signal(signal.SIGINT, previous)
        common._SIGINT.clear()
    assert ended.value.code == 130
    said = capsys.readouterr().err  # after the command: what it said, then the word
    assert said.split().count("stopped") == 1 and said.strip().endswith("stopped"), said


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.12, 0.25, 0.3, 0.35, 0.4, 0.5, 0.8, 1.2])
def test_ctrl_c_while_the_command_loads_is_quiet(setup, delay, tmp_path):
    """Ctrl-C while the command's modules load (PyTorch's imports may swallow it) stops
    with 130 and one line, leaves no half-made run, and never lets training go on.
    (The interpreter's own first few hundredths of a second are outside toygpt's reach.)"""
    runs = tmp_path / "runs"
    env = {**os.environ, **setup["env"], "TOYGPT_RUNS_DIR": str(runs)}
    cmd = [sys.executable, "-m", "toygpt_cli", "train", "--iters", "100000", *TINY_ARGS,
           "--data", setup["corpus"]]  # fmt: skip
    before: set = set()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert "Traceback" not in stderr, stderr
    # 130, or killed by SIGINT itself: Python does that when a KeyboardInterrupt passed
    # through an import's own code; a shell sees 130 either way, and a script stops too.
    assert proc.returncode in (130, -signal.SIGINT), stderr
    if proc.returncode == 130 or stderr.strip():  # else: ended by the signal itself
        # before Python's own handler was in place (a slow start)
        assert stderr.strip(), f"exit {proc.returncode} without a word"
        last = stderr.strip().splitlines()[-1]
        assert last.startswith(("stopped", "interrupted", "resume with")), stderr
    for run in (set(runs.iterdir()) if runs.exists() else set()) - before:
        status = json.loads((run / "status.json").read_text())["status"]
        assert status == "interrupted", (run, status)  # a run it made is resumable


@pytest.mark.slow
@pytest.mark.parametrize("args", [["--help"], ["data", "info", "{corpus}", "--json"]],
                         ids=["help", "data info"])  # fmt: skip
def test_a_closed_stdout_is_one_line(setup, args):
    """Started with stdout closed (`>&-`), Python has no sys.stdout at all."""
    args = [a.format(corpus=setup["corpus"]) for a in args]
    env = {**os.environ, **setup["env"]}
    cmd = [sys.executable, "-m", "toygpt_cli", *args]
    proc = subprocess.run(cmd, stderr=subprocess.PIPE, text=True, env=env, timeout=120,
                          preexec_fn=lambda: os.close(1))  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip() == "error: cannot write the output: standard output is closed"


@pytest.mark.slow
def test_a_closed_stderr_still_gives_the_exit_code(setup):
    env = {**os.environ, **setup["env"]}
    proc = subprocess.run([sys.executable, "-m", "toygpt_cli", "runs", "show", "nope"],
                          stdout=subprocess.PIPE, text=True, env=env, timeout=120,
                          preexec_fn=lambda: os.close(2))  # fmt: skip
    assert proc.returncode == 1 and proc.stdout == ""


def test_pytorch_failing_to_load_is_one_line(tmp_path):
    """Under `ulimit -v`, importing torch can fail with SystemError deep inside it: one line
    (written plainly: nothing else can be relied on then), exit 1."""
    fake = tmp_path / "site" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise SystemError('error return without exception set')\n")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "from toygpt_cli.cli.common import handle_errors; "
        "handle_errors(lambda: __import__('torch'))()"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(fake.parent)], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: cannot load PyTorch")
    assert len(proc.stderr.splitlines()) == 1


def test_a_system_error_outside_pytorch_is_not_hidden():
    from toygpt_cli.cli.common import handle_errors

    def ours():
        raise SystemError("ours")

    with pytest.raises(SystemError):
        handle_errors(ours)()
