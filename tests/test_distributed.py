"""Two-process DistributedDataParallel training (gloo on CPU) through `toygpt train --nproc`."""

import json
import os
import subprocess
import sys

from toygpt_cli.checkpoint import load_checkpoint

from .cli_helpers import toygpt
from .conftest import TINY_ARGS

ARGS = [
    *TINY_ARGS,
    "--iters",
    "150",
    "--eval-interval",
    "50",
    "--eval-iters",
    "20",
    "--lr",
    "3e-3",
    "--threads",
    "1",
]


def test_two_process_training_matches_one_process_with_the_same_effective_batch(dirs, corpus_file):
    _, runs = dirs
    env = dict(os.environ, TOYGPT_RUNS_DIR=str(runs / "ddp"), OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "toygpt_cli",
        "train",
        "--nproc",
        "2",
        "--data",
        str(corpus_file),
        *ARGS,
        "--batch-size",
        "8",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (run,) = (runs / "ddp").iterdir()  # one run folder, made by rank 0 only
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 50, 100, 150]  # each eval written once
    config = json.loads((run / "config.json").read_text())
    assert config["resolved"]["world_size"] == 2
    assert config["resolved"]["effective_batch_size"] == 16
    ckpt = load_checkpoint(run / "ckpt.pt")
    assert not any(k.startswith("module.") for k in ckpt["model"])
    assert len(ckpt["rng"]["batches"]) == 2  # each rank's batch stream, for resume

    single = toygpt(
        "train", "--data", corpus_file, *ARGS, "--batch-size", "16", "--runs-dir", runs / "single"
    )
    assert single.exit_code == 0, single.stderr
    (one,) = (runs / "single").iterdir()
    ddp_val = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["val_loss"]
    one_val = json.loads((one / "metrics.jsonl").read_text().splitlines()[-1])["val_loss"]
    assert abs(ddp_val - one_val) < 0.15, (ddp_val, one_val)

    # A DDP checkpoint is an ordinary one: sample and resume in one process.
    r = toygpt("sample", "--run", str(run), "-n", "20", "--seed", "1")
    assert r.exit_code == 0 and len(r.stdout) == 21
    r = toygpt("train", "--resume", str(run), "--steps", "10")
    assert r.exit_code == 0, r.stderr
