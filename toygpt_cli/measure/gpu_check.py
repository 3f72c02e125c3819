"""The GPU check (a measurement script, not a test): run it on a machine with a CUDA GPU and
Tiny Shakespeare in ./data (or pass --data), and add its report to docs/results.md.

    python -m toygpt_cli.measure.gpu_check [--data FILE] [--out FILE] [--skip-nanogpt]

1. the test suite's CUDA tests (-k cuda)
2. `toygpt bench --device cuda`
3. the full default run, `toygpt train --device cuda --iters 5100`, timed end to end, then
   `toygpt eval --split val` (the whole val split)
4. `--preset nanogpt-char` to its final val loss, timed, then the eval and a sample
5. `--preset cpu-1m --max-time 20s` on the GPU (the preset sizes itself to the machine),
   then the eval
6. the default run with `--compile --compile-mode reduce-overhead` (CUDA graphs)

Each line of the report is written as soon as its step ends (to stdout and, with --out, to
FILE), and each step has a time limit, so a check cut short still says what it measured.
`--smoke` runs every step tiny on the CPU, to check this script where no GPU is.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def toygpt(*args: str) -> list[str]:
    return [sys.executable, "-m", "toygpt_cli", *args]


class Check:
    def __init__(self, env: dict[str, str], out: Path | None):
        self.env = env
        self.out = out

    def say(self, line: str) -> None:
        print(line, flush=True)
        if self.out is not None:
            with self.out.open("a", encoding="utf-8") as f:
                f.write(line + "\n")

    def run(self, cmd: list[str], limit: float) -> tuple[int, float, str, str]:
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired as e:
            text = (e.stderr or b"").decode() if isinstance(e.stderr, bytes) else e.stderr or ""
            return -1, time.perf_counter() - t0, "", f"timed out after {limit:.0f} s\n{text}"
        return proc.returncode, time.perf_counter() - t0, proc.stdout, proc.stderr

    def train(self, label: str, args: list[str], limit: float) -> bool:
        code, secs, _, err = self.run(toygpt("train", "--quiet", *args), limit)
        done = [line for line in err.splitlines() if line.startswith("done:")]
        self.say(f"{label}: exit {code}, {secs:.1f} s end to end; "
                 f"{done[-1] if done else err.strip()[-400:]}")  # fmt: skip
        return code == 0

    def evaluate(self, limit: float) -> None:
        code, secs, out, err = self.run(toygpt("eval", "--split", "val", "--json"), limit)
        if code == 0:
            val = json.loads(out)["splits"]["val"]["loss"]
            self.say(f"   eval --split val: whole val split {val:.4f} ({secs:.1f} s)")
        else:
            self.say(f"   eval failed (exit {code}): {err.strip()[-300:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", help="Tiny Shakespeare (default: found in ./data)")
    parser.add_argument("--out", type=Path, help="also append each report line to this file")
    parser.add_argument("--skip-nanogpt", action="store_true", help="skip step 4")
    parser.add_argument("--smoke", action="store_true", help="every step tiny, on the CPU")
    args = parser.parse_args()
    import torch

    device = "cpu" if args.smoke else "cuda"
    if not args.smoke and not torch.cuda.is_available():
        sys.exit("no CUDA GPU visible: nothing to check")
    runs = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    env = dict(os.environ, TOYGPT_RUNS_DIR=str(runs), CI="1", PYTHONUNBUFFERED="1")
    check = Check(env, args.out)
    data = ["--data", args.data] if args.data else []
    small = ["--iters", "20", "--eval-interval", "10", "--eval-iters", "2"] if args.smoke else []
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU (smoke test)"
    check.say(f"GPU: {name}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
              f"Python {sys.version.split()[0]}")  # fmt: skip

    tests = ["tests", "-k", "cuda", "-p", "no:cacheprovider", "--continue-on-collection-errors"]
    code, secs, out, err = check.run([sys.executable, "-m", "pytest", "-q", *tests], 150)
    tail = (out.strip().splitlines() or [err.strip()[-300:]])[-1]
    check.say(f"1. CUDA tests: exit {code} ({secs:.0f} s): {tail}")
    if code not in (0, 5):
        check.say("\n".join(out.strip().splitlines()[-40:]))

    code, secs, out, err = check.run(toygpt("bench", "--device", device, "--json"), 90)
    if code == 0:
        b = json.loads(out)
        check.say(
            f"2. bench: {b['train_tokens_per_sec']:,.0f} train tokens/s "
            f"({b['train_step_ms']:.2f} ms/step), eval {b['eval_tokens_per_sec']:,.0f} tokens/s, "
            f"sampling {b['sample_chars_per_sec']:,.0f} chars/s, dtype {b['dtype']}"
        )
        check.say(f"   bench json: {json.dumps(b)[:1500]}")
    else:
        check.say(f"2. bench failed (exit {code}): {err.strip()[-300:]}")

    default = ["--device", device, *(small or ["--iters", "5100"]), *data]
    if check.train("3. default run", default, 150):
        check.evaluate(60)

    if not args.skip_nanogpt:
        nano = ["--device", device, "--preset", "nanogpt-char", *small, *data]
        if check.train("4. nanogpt-char", nano, 240):
            check.evaluate(60)
            code, secs, out, err = check.run(toygpt("sample", "-n", "300", "--seed", "1"), 60)
            check.say(f"   sample (exit {code}, {secs:.1f} s):\n{out}")

    short = "5s" if args.smoke else "20s"
    one = ["--device", device, "--preset", "cpu-1m", "--max-time", short, *data]
    code, secs, _, err = check.run(toygpt("train", *one), 90)
    sized = [line for line in err.splitlines() if "sized to this machine" in line]
    done = [line for line in err.splitlines() if line.startswith("done:")]
    end = done[-1] if done else err.strip()[-300:]
    sized_line = sized[-1].strip() if sized else ""
    check.say(f"5. cpu-1m --max-time {short}: exit {code}, {secs:.1f} s; {sized_line}; {end}")
    if code == 0:
        check.evaluate(60)

    graphs = ["--compile", "--compile-mode", "reduce-overhead"]
    label = "6. default run, compiled, CUDA graphs"
    if not args.smoke and check.train(label, [*default, *graphs], 180):
        check.evaluate(60)
    check.say(f"(runs kept in {runs})")


if __name__ == "__main__":
    main()
