"""`toygpt eval`: score a run's checkpoint on its whole splits."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from toygpt_cli.cli.common import (
    CheckpointOpt,
    DeviceOpt,
    DtypeOpt,
    JsonFlag,
    RunRef,
    RunsDir,
    ThreadsOpt,
    err,
    handle_errors,
    out,
    paths,
)


@handle_errors
def eval_(
    run: RunRef = "latest",
    split: Annotated[str, typer.Option("--split", help="train, val or both.")] = "both",
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    checkpoint: CheckpointOpt = "auto",
    threads: ThreadsOpt = 0,
    json_: JsonFlag = False,
    runs_dir: RunsDir = None,
) -> None:
    """Score a run's checkpoint on every character of its splits: loss, bits/char, perplexity."""
    from toygpt_cli.errors import UsageError

    if split not in ("train", "val", "both"):
        raise UsageError(f"--split must be train, val or both, got {split!r}")
    from toygpt_cli.device import set_threads
    from toygpt_cli.inference import evaluate_run, load_for_inference

    set_threads(threads)

    loaded = load_for_inference(run, paths(runs_dir=runs_dir).runs_dir, checkpoint, device, dtype)
    if not json_:
        err.print(
            f"evaluating {loaded.run.name} ({loaded.checkpoint.name}, step {loaded.step}) "
            f"on {loaded.device}, {loaded.dtype}",
            highlight=False,
        )
    result = evaluate_run(loaded, ("train", "val") if split == "both" else (split,))
    if json_:
        out.print(json.dumps(result, indent=2), markup=False, highlight=False)
        return
    from rich.table import Table

    table = Table(title=f"{loaded.run.name} at step {loaded.step}")
    for col in ("split", "characters", "loss", "bits/char", "perplexity"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for name in ("train", "val"):
        if name in result["splits"]:
            r = result["splits"][name]
            table.add_row(
                name,
                f"{r['chars']:,}",
                f"{r['loss']:.4f}",
                f"{r['bits_per_char']:.4f}",
                f"{r['perplexity']:.3f}",
            )
    out.print(table)
    err.print(f"saved {loaded.run.file('eval.json')}", highlight=False)
