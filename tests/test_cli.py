import json
import subprocess
import sys

from .cli_helpers import toygpt
from .conftest import TINY_ARGS


def test_data_fetch_from_local_server(dirs, http_server):
    data, _ = dirs
    url = http_server["base"] + "/input.txt"
    r = toygpt("data", "fetch", "--url", url, "--sha256", http_server["sha256"])
    assert r.exit_code == 0, r.stderr
    assert (data / "input.txt").read_bytes() == http_server["body"]
    r = toygpt("data", "fetch", "--url", url)
    assert r.exit_code == 0 and "already there" in r.stderr
    r = toygpt("data", "info", str(data / "input.txt"), "--json")
    info = json.loads(r.stdout)
    assert info["chars"] == len(http_server["body"]) and info["vocab_size"] > 10
    assert info["recorded_sha256"] == http_server["sha256"]


def test_data_fetch_404_and_mismatch_are_one_line_errors(dirs, http_server):
    data, _ = dirs
    r = toygpt("data", "fetch", "--url", http_server["base"] + "/nothing.txt")
    assert r.exit_code == 1 and r.stderr.strip() == (
        f"error: HTTP 404 from {http_server['base']}/nothing.txt"
    )
    r = toygpt(
        "data",
        "fetch",
        "--url",
        http_server["base"] + "/wrong.txt",
        "--sha256",
        http_server["sha256"],
    )
    assert r.exit_code == 1 and "checksum mismatch" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (data / "wrong.txt").exists()


def test_train_sample_eval_resume(dirs, corpus_file):
    _, runs = dirs
    r = toygpt(
        "train",
        "--data",
        corpus_file,
        *TINY_ARGS,
        "--iters",
        "40",
        "--eval-interval",
        "20",
        "--sample",
    )
    assert r.exit_code == 0, r.stderr
    (run,) = runs.iterdir()
    assert {"config.json", "ckpt.pt", "best.pt", "metrics.jsonl", "samples.jsonl"} <= {
        p.name for p in run.iterdir()
    }
    assert "val loss" in r.stderr and str(run) in r.stderr
    assert len(r.stdout) >= 500  # --sample prints on stdout

    r = toygpt("sample", "--run", "latest", "-n", "50", "--seed", "3")
    assert r.exit_code == 0 and len(r.stdout) == 51  # text + newline, status went to stderr
    again = toygpt("sample", "--run", run.name, "-n", "50", "--seed", "3")
    assert again.stdout == r.stdout
    two = toygpt("sample", "--run", str(run), "-n", "20", "--num-samples", "2", "--seed", "3")
    assert len(two.stdout.splitlines()) >= 2

    r = toygpt("eval", "--run", "latest", "--json")
    assert r.exit_code == 0, r.stderr
    result = json.loads(r.stdout)
    val = result["splits"]["val"]
    assert val["bits_per_char"] > 0 and val["perplexity"] > 1 and val["chars"] > 0
    assert json.loads((run / "eval.json").read_text())["splits"]["val"] == val

    r = toygpt("train", "--resume", "--steps", "10")
    assert r.exit_code == 0, r.stderr
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 20, 40, 50]


def test_eval_table(dirs, corpus_file):
    toygpt("train", "--data", corpus_file, *TINY_ARGS, "--iters", "10")
    r = toygpt("eval", "--split", "val")
    assert r.exit_code == 0, r.stderr
    assert "val" in r.stdout and "bits/char" in r.stdout and "perplexity" in r.stdout


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
