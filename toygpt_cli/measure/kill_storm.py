"""Kill storm (a measurement script, not a test): start N trainings, SIGKILL each at a
random moment in its first S seconds (start-up included), then check that every run folder
lists and that every run showing a checkpoint resumes.

    python -m toygpt_cli.measure.kill_storm [--runs 30] [--within 12] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIXTURE = Path(__file__).resolve().parents[2] / "tests" / "data" / "shakespeare_200k.txt"
TINY = ["--n-embd", "32", "--n-layer", "2", "--n-head", "4", "--block-size", "16",
        "--batch-size", "16", "--eval-iters", "4", "--sample-chars", "40"]  # fmt: skip


def toygpt(env, *args, check=False):
    cmd = [sys.executable, "-m", "toygpt_cli", *map(str, args)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, check=check)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--within", type=float, default=12.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=FIXTURE, help="the text to train on")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kill-storm-"))
    corpus = work / "corpus.txt"
    shutil.copy(args.data, corpus)
    env = dict(os.environ, TOYGPT_RUNS_DIR=str(work / "runs"), CI="1")
    rng = random.Random(args.seed)
    delays = []
    for _ in range(args.runs):
        delay = rng.uniform(0.0, args.within)
        cmd = [sys.executable, "-m", "toygpt_cli", "train", "--data", str(corpus), *TINY]
        cmd += ["--iters", "100000", "--eval-interval", "25", "--threads", "1"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.kill()
        proc.wait()
        delays.append(delay)
    runs = work / "runs"
    folders = (
        sorted(p for p in runs.iterdir() if not p.name.startswith(".")) if runs.exists() else []
    )
    hidden = (
        sorted(p.name for p in runs.iterdir() if p.name.startswith(".")) if runs.exists() else []
    )
    listing = toygpt(env, "runs", "list", "--json")
    rows = json.loads(listing.stdout) if listing.returncode == 0 else []
    listed = {r["name"] for r in rows if r.get("status") != "damaged"}
    with_ckpt = [p for p in folders if (p / "ckpt.pt").exists()]
    resumed = [
        p for p in with_ckpt if toygpt(env, "train", "--resume", p, "--steps", 2).returncode == 0
    ]
    early = sum(d < 3.0 for d in delays)
    print(
        f"kills: {args.runs} (SIGKILL between {min(delays):.1f} and {max(delays):.1f} s; "
        f"{early} in the first 3 s)"
    )
    print(
        f"visible run folders: {len(folders)}; listed without damage: "
        f"{len(listed & {p.name for p in folders})}/{len(folders)} "
        f"(runs list exit {listing.returncode})"
    )
    print(
        f"with a checkpoint: {len(with_ckpt)}/{len(folders)}; "
        f"resumed: {len(resumed)}/{len(with_ckpt)}"
    )
    print(f"hidden staging folders left (removed by the next start): {len(hidden)}")
    after = toygpt(env, "train", "--data", corpus, *TINY, "--iters", "1")
    left = [p for p in runs.iterdir() if p.name.startswith(".staging-")]
    print(f"after one more start: exit {after.returncode}, staging folders left: {len(left)}")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
