"""Two-process DistributedDataParallel training (gloo on CPU) through `toygpt train --nproc`."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from toygpt_cli.runs.checkpoint import read_checkpoint

from ..cli_helpers import toygpt
from ..conftest import TINY_ARGS

pytestmark = pytest.mark.slow  # several processes each

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
    ckpt = read_checkpoint(run / "ckpt.pt").data
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
    # both score eval_iters batches of 16 windows: the same windows, half on each process
    assert ckpt["state"]["eval_windows"] == 20 * 16
    assert read_checkpoint(one / "ckpt.pt").data["state"]["eval_windows"] == 20 * 16

    # A DDP checkpoint is an ordinary one: sample and resume in one process.
    r = toygpt("sample", "--run", str(run), "-n", "20", "--seed", "1")
    assert r.exit_code == 0 and len(r.stdout) == 21
    r = toygpt("train", "--resume", str(run), "--steps", "10", "--nproc", "1")
    assert r.exit_code == 0, r.stderr
    note = " ".join(r.stderr.split())
    assert "trained with 2 processes (an effective batch of 16); it continues with 1" in note
    assert "continues with 1 (an effective batch of 8)" in note
    assert json.loads((run / "config.json").read_text())["resolved"]["world_size"] == 1


def _pooled(rank: int, store: str, out: str) -> None:
    import torch.distributed as dist

    from toygpt_cli.parallel.distributed import Distributed

    dist.init_process_group("gloo", init_method=store, rank=rank, world_size=2)
    try:
        # an eval of 5 windows on 2 processes: rank 0 scores 3 (losses summing to 3.0),
        # rank 1 scores 2 (summing to 7.0); the mean of all 5 is 2.0
        total, count = (3.0, 3) if rank == 0 else (7.0, 2)
        mean = Distributed(rank, 2, rank, torch.device("cpu")).pooled_mean(total, count)
        with open(f"{out}.{rank}", "w") as f:
            f.write(repr(mean))
    finally:
        dist.destroy_process_group()


def test_an_eval_shared_unevenly_among_processes_is_the_mean_of_every_window(tmp_path):
    store = (tmp_path / "store").as_uri()
    torch.multiprocessing.start_processes(
        _pooled, args=(store, str(tmp_path / "mean")), nprocs=2, start_method="spawn"
    )
    assert [float((tmp_path / f"mean.{r}").read_text()) for r in (0, 1)] == [2.0, 2.0]


def _ddp_cmd(corpus, *extra):
    return [sys.executable, "-m", "toygpt_cli", "train", "--data", str(corpus), *ARGS, *extra]


def test_two_torchrun_agents_with_a_c10d_rendezvous_train_one_run(dirs, corpus_file):
    """Two 'nodes' on 127.0.0.1, one process each, as a multi-node launch would be."""
    _, runs = dirs
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, TOYGPT_RUNS_DIR=str(runs), OMP_NUM_THREADS="1", CI="1")
    launcher = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "toygpt",
        "--max-restarts", "0", "-m", "toygpt_cli", "train", "--data", str(corpus_file), *ARGS,
        "--iters", "60", "--eval-interval", "30", "--batch-size", "8",
    ]  # fmt: skip
    agents = [
        subprocess.Popen(launcher, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    outputs = [a.communicate(timeout=300) for a in agents]
    assert [a.returncode for a in agents] == [0, 0], outputs
    (run,) = runs.iterdir()
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 30, 60]
    assert json.loads((run / "config.json").read_text())["resolved"]["world_size"] == 2
    r = toygpt("sample", "--run", str(run), "-n", "10", "--seed", "1")
    assert r.exit_code == 0 and len(r.stdout) == 11
    r = toygpt("train", "--resume", str(run), "--steps", "5")
    assert r.exit_code == 0, r.stderr


def test_sigterm_to_the_launcher_stops_every_worker_with_a_checkpoint(dirs, corpus_file):
    _, runs = dirs
    proc, run = _start_and_wait_for_evals(runs, corpus_file)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "interrupted"
    assert read_checkpoint(run / "ckpt.pt").data["state"]["step"] == status["step"] > 0
    # No worker outlived the launcher: the run's lock is free again.
    r = toygpt("train", "--resume", str(run), "--steps", "2")
    assert r.exit_code == 0, r.stderr


def _start_and_wait_for_evals(runs, corpus_file, evals=2):
    env = dict(os.environ, TOYGPT_RUNS_DIR=str(runs), OMP_NUM_THREADS="1", CI="1")
    cmd = _ddp_cmd(corpus_file, "--nproc", "2", "--iters", "100000", "--eval-interval", "20")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = list(runs.glob("2*/metrics.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= evals:
            return proc, found[0].parent
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    proc.kill()
    pytest.fail("the run did not reach its evals")


def _workers(proc):
    return [int(p) for p in open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()]


def test_a_signal_to_one_worker_stops_them_all_with_a_checkpoint(dirs, corpus_file):
    """Only rank 1 hears it (a cluster may signal one process): every rank must agree to
    stop, or the checkpoint (a collective) would wait for ever."""
    _, runs = dirs
    proc, run = _start_and_wait_for_evals(runs, corpus_file)
    workers = _workers(proc)
    assert len(workers) == 2
    os.kill(workers[1], signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr  # the signal rank 1 heard, from every rank
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "interrupted", stderr
    assert read_checkpoint(run / "ckpt.pt").data["state"]["step"] == status["step"] > 0


@pytest.mark.parametrize("rank", [0, 1])
def test_a_worker_killed_outright_is_one_line_from_the_launcher(dirs, corpus_file, rank):
    _, runs = dirs
    proc, run = _start_and_wait_for_evals(runs, corpus_file)
    os.kill(_workers(proc)[rank], signal.SIGKILL)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr
    r = toygpt("train", "--resume", str(run), "--steps", "2", "--nproc", "1")
    assert r.exit_code == 0, r.stderr


def test_nproc_with_the_dataset_missing_offline_is_one_line_and_leaves_nothing(dirs):
    data, runs = dirs
    env = dict(os.environ, CI="1", https_proxy="http://127.0.0.1:9", HTTPS_PROXY="")
    cmd = [sys.executable, "-m", "toygpt_cli", "train", "--nproc", "2", *ARGS]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "download failed" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not data.exists() and not runs.exists()


def _weights_and_moments(run):
    ckpt = read_checkpoint(run / "ckpt.pt", resume=True).data
    moments = {(i, k): v for i, s in ckpt["optimizer"]["state"].items() for k, v in s.items()}
    return ckpt, moments


def test_two_process_resume_is_exact_and_each_rank_has_its_own_dropout(dirs, corpus_file):
    _, runs = dirs
    env = dict(os.environ, OMP_NUM_THREADS="1", CI="1")
    base = [sys.executable, "-m", "toygpt_cli", "train", "--nproc", "2", "--data", str(corpus_file),
            *TINY_ARGS, "--eval-interval", "20", "--eval-iters", "2", "--threads", "1",
            "--dropout", "0.2"]  # fmt: skip

    def train(folder, *extra):
        proc = subprocess.run([*base, "--runs-dir", str(runs / folder), *extra], env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stderr

    train("straight", "--iters", "40")
    train("resumed", "--iters", "20")
    (resumed,) = (runs / "resumed").iterdir()
    # no --nproc: it resumes with as many processes as it trained with
    resume = [sys.executable, "-m", "toygpt_cli", "train", "--resume", str(resumed), "--steps",
              "20", "--threads", "1"]  # fmt: skip
    proc = subprocess.run(resume, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "starting 2 training processes, as the run trained" in proc.stderr
    assert json.loads((resumed / "config.json").read_text())["resumes"][-1]["world_size"] == 2
    (straight,) = (runs / "straight").iterdir()
    a, a_moments = _weights_and_moments(straight)
    b, b_moments = _weights_and_moments(resumed)
    assert a["state"]["step"] == b["state"]["step"] == 40
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert a_moments.keys() == b_moments.keys()
    for key, tensor in a_moments.items():
        assert torch.equal(tensor, b_moments[key]), key
    cpu = a["rng"]["cpu"]  # every rank's dropout stream, each its own
    assert len(cpu) == 2 and not torch.equal(cpu[0], cpu[1])
