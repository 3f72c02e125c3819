"""The GPU check (a measurement script, not a test): run it on a machine with a CUDA GPU and
Tiny Shakespeare in ./data (or pass --data), and add its report to docs/results.md.

    python -m toygpt_cli.measure.gpu_check [--data FILE] [--skip-nanogpt]

1. the test suite's CUDA tests (tests/test_device.py and tests/test_muon.py, -k cuda)
2. `toygpt bench --device cuda`
3. the full default run, `toygpt train --device cuda --iters 5100`, timed end to end
4. the same with `--compile --compile-mode reduce-overhead` (CUDA graphs)
5. `--preset nanogpt-char` to its final val loss, timed, then `toygpt eval --split val`
6. a sample from it
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


def _run(cmd: list[str], env: dict[str, str]) -> tuple[int, float, str, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    return proc.returncode, time.perf_counter() - t0, proc.stdout, proc.stderr


def toygpt(*args: str) -> list[str]:
    return [sys.executable, "-m", "toygpt_cli", *args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", help="Tiny Shakespeare (default: found in ./data)")
    parser.add_argument("--skip-nanogpt", action="store_true", help="skip step 5 and 6")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit("no CUDA GPU visible: nothing to check")
    runs = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    env = dict(os.environ, TOYGPT_RUNS_DIR=str(runs), CI="1")
    data = ["--data", args.data] if args.data else []
    report = [
        f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
        f"CUDA {torch.version.cuda}",
        "",
    ]

    tests = ["tests/test_device.py", "tests/test_muon.py", "-k", "cuda"]
    code, secs, out, err = _run([sys.executable, "-m", "pytest", "-q", *tests], env)
    report.append(f"1. CUDA tests: exit {code} ({secs:.0f} s): {out.strip().splitlines()[-1]}")

    code, secs, out, err = _run(toygpt("bench", "--device", "cuda", "--json"), env)
    if code == 0:
        b = json.loads(out)
        report.append(
            f"2. bench: {b['train_tokens_per_sec']:,.0f} train tokens/s "
            f"({b['train_step_ms']:.2f} ms/step), eval {b['eval_tokens_per_sec']:,.0f} tokens/s, "
            f"sampling {b['sample_chars_per_sec']:,.0f} chars/s, dtype {b['dtype']}"
        )
    else:
        report.append(f"2. bench failed: {err.strip()[-300:]}")

    for label, extra in (
        ("3. default run", []),
        (
            "4. default run, compiled, CUDA graphs",
            ["--compile", "--compile-mode", "reduce-overhead"],
        ),
    ):
        cmd = toygpt("train", "--device", "cuda", "--iters", "5100", "--quiet", *data, *extra)
        code, secs, out, err = _run(cmd, env)
        last = [line for line in err.splitlines() if line.startswith("done:")]
        report.append(
            f"{label}: exit {code}, {secs:.1f} s end to end; {last[-1] if last else err[-300:]}"
        )

    if not args.skip_nanogpt:
        cmd = toygpt("train", "--device", "cuda", "--preset", "nanogpt-char", "--quiet", *data)
        code, secs, out, err = _run(cmd, env)
        last = [line for line in err.splitlines() if line.startswith("done:")]
        report.append(
            f"5. nanogpt-char: exit {code}, {secs:.1f} s; {last[-1] if last else err[-300:]}"
        )
        code, secs, out, err = _run(toygpt("eval", "--split", "val", "--json"), env)
        if code == 0:
            val = json.loads(out)["splits"]["val"]["loss"]
            report.append(f"   eval --split val: whole val split {val:.4f} ({secs:.1f} s)")
        code, secs, out, err = _run(toygpt("sample", "-n", "300", "--seed", "1"), env)
        report.append(f"6. sample (exit {code}, {secs:.1f} s):\n{out}")
    print("\n".join(report))
    print(f"(runs kept in {runs})")


if __name__ == "__main__":
    main()
