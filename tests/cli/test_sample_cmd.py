"""`toygpt sample` as people use it: streaming, separators, --json, prompt files,
interactive mode (through stdin and a pseudo-terminal), greedy decoding, closed pipes,
Ctrl-C, --threads, and one-line errors."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time

import pytest
import torch

from toygpt_cli.config import ModelConfig, TrainConfig
from toygpt_cli.runs.inference import load_for_inference
from toygpt_cli.runs.session import start_training
from toygpt_cli.sample import sample_text

from ..cli_helpers import toygpt
from ..conftest import FIXTURE_CORPUS

SEP = re.compile(r"^--- sample (\d+) ---\n", re.MULTILINE)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample_cli")
    corpus = root / "tiny.txt"
    corpus.write_text(FIXTURE_CORPUS.read_text(encoding="utf-8")[:20_000], encoding="utf-8")
    model = ModelConfig(block_size=16, n_embd=32, n_layer=2, n_head=4, dropout=0.0)
    train = TrainConfig(iters=30, eval_interval=30, eval_iters=2, batch_size=8, sample_chars=0)
    return start_training(model, train, corpus, root / "runs").run().run.path


@pytest.fixture(scope="module")
def loaded(run_dir):
    return load_for_inference(str(run_dir), run_dir.parent, dtype="float32")


def sample(run_dir, *args, input=None):
    return toygpt("sample", "--run", run_dir, "--dtype", "float32", *args, input=input)


def reference(loaded, **kw):
    return sample_text(loaded.model, loaded.tokenizer, dtype="float32", **kw)


def _subprocess(run_dir, *args, **popen):
    cmd = [sys.executable, "-m", "toygpt_cli", "sample", "--run", str(run_dir)]
    env = {**os.environ, "TOYGPT_THREADS": "1", "CI": "1"}
    return subprocess.Popen([*cmd, "--dtype", "float32", *map(str, args)], env=env, **popen)


def _read_until(fd, predicate, limit=60.0) -> bytes:
    """Bytes from fd until predicate(data) holds, EOF, or `limit` seconds pass (a hang guard)."""
    data, end = b"", time.monotonic() + limit
    while not predicate(data) and time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # a pty reads EIO once the other side is closed
                break
            if not chunk:
                break
            data += chunk
    return data


def test_one_sample_is_the_library_text(run_dir, loaded):
    r = sample(run_dir, "-n", 60, "--seed", 3, "--prompt", "ROMEO:")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == reference(loaded, prompt="ROMEO:", max_new_tokens=60, seed=3)[0] + "\n"
    assert "seed 3" in r.stderr  # status on stderr


def test_without_a_seed_the_reported_seed_reproduces_the_text(run_dir):
    first = sample(run_dir, "-n", 40)
    seed = re.search(r"seed (\d+)", first.stderr).group(1)
    assert sample(run_dir, "-n", 40, "--seed", seed).stdout == first.stdout


def test_samples_are_separated_by_a_line_scripts_can_split_on(run_dir, loaded):
    r = sample(run_dir, "-n", 30, "--seed", 5, "--num-samples", 3, "-p", "ROMEO")
    assert r.exit_code == 0, r.stderr
    assert [int(n) for n in SEP.findall(r.stdout)] == [1, 2, 3]
    texts = [t.removesuffix("\n") for t in SEP.split(r.stdout)[2::2]]
    assert texts == reference(loaded, prompt="ROMEO", max_new_tokens=30, num_samples=3, seed=5)


def test_json_lists_every_sample_with_its_settings(run_dir, loaded):
    r = sample(run_dir, "-n", 25, "--seed", 9, "--num-samples", 2, "-p", "To", "--json")
    assert r.exit_code == 0, r.stderr
    rows = json.loads(r.stdout)
    expected = reference(loaded, prompt="To", max_new_tokens=25, num_samples=2, seed=9)
    assert [row["text"] for row in rows] == expected
    assert [row["sample"] for row in rows] == [1, 2]
    assert rows[0]["prompt"] == "To" and rows[0]["completion"] == expected[0][2:]
    assert rows[0]["seed"] == 9 and rows[0]["step"] == 30 and rows[0]["num_samples"] == 2
    assert rows[0]["dtype"] == "float32"


def test_temperature_zero_is_greedy(run_dir, loaded):
    a = sample(run_dir, "-n", 40, "-t", 0, "--seed", 1, "-p", "The")
    b = sample(run_dir, "-n", 40, "-t", 0, "--seed", 2, "-p", "The")
    assert a.exit_code == 0, a.stderr
    assert a.stdout == b.stdout  # the seed plays no part
    greedy = reference(loaded, prompt="The", max_new_tokens=40, top_k=1, seed=7)[0]
    assert a.stdout == greedy + "\n"


def test_prompt_file_is_the_same_as_the_prompt(run_dir, tmp_path):
    f = tmp_path / "prompt.txt"
    f.write_text("ROMEO:\nI", encoding="utf-8")
    a = sample(run_dir, "-n", 30, "--seed", 4, "--prompt-file", f)
    b = sample(run_dir, "-n", 30, "--seed", 4, "--prompt", "ROMEO:\nI")
    assert a.exit_code == 0, a.stderr
    assert a.stdout == b.stdout and a.stdout.startswith("ROMEO:\nI")
    c = sample(run_dir, "-n", 30, "--seed", 4, "--prompt-file", "-", input="ROMEO:\nI")
    assert c.stdout == a.stdout


@pytest.mark.parametrize(
    ("content", "args", "message", "code"),
    [
        (None, ["--prompt-file", "{tmp}/missing.txt"], "prompt file not found: .*missing.txt", 1),
        (None, ["--prompt-file", "{tmp}"], "prompt file is a folder", 1),
        (b"caf\xe9", ["--prompt-file", "{file}"], "is not UTF-8 text \\(byte 0xe9 at offset 3", 1),
        (
            "Zoë\n",
            ["--prompt-file", "{file}"],
            "prompt file .* outside the run's vocabulary: .*'ë'",
            2,
        ),
        (
            "x",
            ["--prompt-file", "{file}", "--prompt", "y"],
            "--prompt or --prompt-file, not both",
            2,
        ),
        (None, ["-i", "--json"], "--json is for one-shot sampling", 2),
        (None, ["-t", "-1"], "--temperature must be 0 or more, got -1", 2),
        (None, ["-t", "nan"], "--temperature must be a finite number, got nan", 2),
        (None, ["-t", "inf"], "--temperature must be a finite number, got inf", 2),
        (None, ["-t", "1e-39"], "too small to sample with; use 0 for greedy", 2),
        (None, ["--dtype", "foo"], "--dtype must be one of auto, float32, bfloat16, float16", 2),
        (None, ["--prompt", "Zq~"], "the prompt has characters outside .*'~'", 2),
    ],
)
def test_bad_input_is_one_line(run_dir, tmp_path, content, args, message, code):
    f = tmp_path / "p.txt"
    if content is not None:
        f.write_bytes(content if isinstance(content, bytes) else content.encode())
    args = [a.format(tmp=tmp_path, file=f) for a in args]
    r = sample(run_dir, "-n", 5, *args)
    assert r.exit_code == code, (r.stdout, r.stderr)
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("error: ") and re.search(message, line), line
    assert r.stdout == ""


def test_unreadable_prompt_file(run_dir, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    f = tmp_path / "secret.txt"
    f.write_text("x")
    f.chmod(0)
    r = sample(run_dir, "-n", 5, "--prompt-file", f)
    assert r.exit_code == 1 and "cannot read prompt file" in r.stderr


def test_eval_rejects_an_unknown_dtype_in_one_line(run_dir):
    r = toygpt("eval", "--run", run_dir, "--dtype", "foo")
    assert r.exit_code == 2
    (line,) = r.stderr.strip().splitlines()
    assert "--dtype must be one of auto, float32, bfloat16, float16; got 'foo'" in line


def test_interactive_through_a_pipe(run_dir, loaded):
    r = sample(run_dir, "-i", "-n", 20, "--seed", 11, input="ROMEO:\nZzë\nJULIET:\n\nKING:\n")
    assert r.exit_code == 0, r.stderr
    first = reference(loaded, prompt="ROMEO:", max_new_tokens=20, seed=11)[0]
    second = reference(loaded, prompt="JULIET:", max_new_tokens=20, seed=12)[0]
    assert r.stdout == first + "\n" + second + "\n"  # the empty line ended it before KING:
    assert "outside the run's vocabulary: 'Z' 'ë'; skipped" in r.stderr


def test_interactive_ends_at_eof_without_a_newline(run_dir, loaded):
    r = sample(run_dir, "-i", "-n", 10, "--seed", 2, input="ROMEO:")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == reference(loaded, prompt="ROMEO:", max_new_tokens=10, seed=2)[0] + "\n"


@pytest.mark.slow
def test_interactive_on_a_terminal(run_dir, loaded):
    # stdin is a pseudo-terminal, as when a person types; stdout is a pipe we can read.
    master, slave = pty.openpty()
    proc = _subprocess(
        run_dir, "-i", "-n", 30, "--seed", 8, stdin=slave, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    os.close(slave)
    try:
        expected = reference(loaded, prompt="ROMEO:", max_new_tokens=30, seed=8)[0][6:] + "\n"
        os.write(master, b"ROMEO:\n")
        out = _read_until(proc.stdout.fileno(), lambda d: len(d) >= len(expected.encode()))
        assert out.decode() == expected  # the typed prompt is on screen, not repeated
        os.write(master, b"\x04")  # Ctrl-D at the start of a line: end of input
        assert proc.wait(timeout=60) == 0
        stderr = proc.stderr.read().decode()
        assert "> " in stderr and "Traceback" not in stderr
    finally:
        proc.kill()
        os.close(master)


@pytest.mark.slow
def test_ctrl_c_in_interactive_mode_exits_130_quietly(run_dir):
    proc = _subprocess(
        run_dir, "-i", stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        _read_until(proc.stderr.fileno(), lambda d: b"sampling from" in d)  # waiting for input
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
        rest = proc.stderr.read().decode()
        assert "Traceback" not in rest and "Aborted" not in rest
    finally:
        proc.kill()


@pytest.mark.slow
def test_streams_and_stops_quietly_when_the_reader_goes(run_dir):
    # A million characters would take minutes: text that arrives at once was streamed.
    proc = _subprocess(
        run_dir, "-n", 1_000_000, "--seed", 1, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        first = _read_until(proc.stdout.fileno(), lambda d: len(d) >= 10)
        assert len(first) >= 10
        proc.stdout.close()  # like `| head -c 10`
        code = proc.wait(timeout=60)
        stderr = proc.stderr.read().decode()
        assert "Traceback" not in stderr and "Error" not in stderr, stderr
        assert code in (0, 1)
    finally:
        proc.kill()


@pytest.mark.slow
def test_closed_stdin_in_interactive_mode_is_one_line(run_dir):
    cmd = f"{sys.executable} -m toygpt_cli sample --run {run_dir} -i <&-"
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (
        "error: --interactive reads prompts from stdin, and stdin is closed"
    )


def test_threads_option_and_environment_variable(run_dir, monkeypatch):
    before = torch.get_num_threads()
    try:
        assert sample(run_dir, "-n", 2, "--threads", 2).exit_code == 0
        assert torch.get_num_threads() == 2
        monkeypatch.setenv("TOYGPT_THREADS", "1")
        assert sample(run_dir, "-n", 2).exit_code == 0
        assert torch.get_num_threads() == 1
        r = sample(run_dir, "-n", 2, "--threads", 99999)  # more than this machine has
        assert r.exit_code == 2 and "more than the" in r.stderr
    finally:
        torch.set_num_threads(before)


def test_a_fifo_prompt_file_without_a_writer_gives_up_in_one_line(run_dir, tmp_path, monkeypatch):
    from toygpt_cli.cli import sample_cmd

    monkeypatch.setattr(sample_cmd, "FIFO_WAIT", 0.5)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    r = sample(run_dir, "-n", 5, "--prompt-file", fifo)
    assert r.exit_code == 1 and "sent nothing within 0.5 s" in r.stderr


@pytest.mark.parametrize("source", ["/dev/zero", "/dev/urandom"])
def test_endless_prompts_are_refused_not_read_for_ever(run_dir, source, monkeypatch):
    from toygpt_cli.cli import sample_cmd

    monkeypatch.setattr(sample_cmd, "MAX_PROMPT", 10_000)
    r = sample(run_dir, "-n", 5, "--prompt-file", source)
    assert r.exit_code == 1 and "longer than 10,000 bytes" in r.stderr


@pytest.mark.slow
def test_interactive_mode_on_an_endless_stdin_ends_in_one_line(run_dir):
    with open("/dev/zero", "rb") as zero:
        proc = _subprocess(run_dir, "-i", "-n", 5, stdin=zero, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)  # fmt: skip
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and b"longer than 1,000,000 characters" in err


@pytest.mark.slow
def test_memory_stays_flat_while_samples_stream(run_dir):
    # Many samples, long: the others wait in a temporary file, not in memory.
    code = (
        "import resource, sys; from toygpt_cli.cli.app import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    )
    peaks = []
    for n in (2_000, 40_000):
        proc = subprocess.run(
            [sys.executable, "-c", code, "sample", "--run", str(run_dir), "-n", str(n),
             "--num-samples", "50", "--seed", "1", "--threads", "1"],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.count("--- sample ") == 50
        peaks.append(int(proc.stderr.strip().splitlines()[-1]))
    assert peaks[1] - peaks[0] < 40 * 1024, peaks  # KiB: 20x the text, well under 40 MB more


def test_no_room_for_the_other_samples_is_one_line(run_dir, monkeypatch):
    """Samples 2..N wait in a temporary file; a full disk there is one line, not a trace."""
    from toygpt_cli.cli import sample_cmd

    monkeypatch.setattr(sample_cmd.tempfile, "TemporaryFile", lambda: open("/dev/full", "w+b"))  # noqa: SIM115
    r = sample(run_dir, "-n", "20000", "--num-samples", "3", "--seed", "1")
    assert r.exit_code == 1, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: cannot keep samples 2..N")
    assert "Traceback" not in r.stderr
