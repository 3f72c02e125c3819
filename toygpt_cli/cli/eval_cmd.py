"""`toygpt eval`: score a run's checkpoint on its splits (whole, or a spread subset), with
progress, merging the result into the run's eval.json."""

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
    fancy_output,
    handle_errors,
    out,
    paths,
)
from toygpt_cli.cli.meter import Meter


@handle_errors
def eval_(
    run: RunRef = "latest",
    split: Annotated[str, typer.Option("--split", help="train, val or both.")] = "both",
    max_chars: Annotated[
        int | None,
        typer.Option(
            "--max-chars",
            min=1,
            help="Score about this many characters per split, in evenly spaced windows "
            "(default: every character).",
        ),
    ] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    checkpoint: CheckpointOpt = "auto",
    threads: ThreadsOpt = 0,
    json_: JsonFlag = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    runs_dir: RunsDir = None,
) -> None:
    """Score a run's checkpoint on its splits (every character, or --max-chars of each)."""
    from toygpt_cli.errors import UsageError

    if split not in ("train", "val", "both"):
        raise UsageError(f"--split must be train, val or both, got {split!r}")
    from toygpt_cli.device import set_threads
    from toygpt_cli.runs.inference import evaluate_run, load_for_inference

    set_threads(threads)

    loaded = load_for_inference(run, paths(runs_dir=runs_dir).runs_dir, checkpoint, device, dtype)
    if not json_:
        err.print(
            f"evaluating {loaded.name} ({loaded.checkpoint.name}, step {loaded.step}) "
            f"on {loaded.device}, {loaded.dtype}",
            highlight=False,
        )
    asked = ("train", "val") if split == "both" else (split,)
    with Meter(fancy_output(quiet or json_), "chars", plain_done=not json_) as meter:
        result = evaluate_run(loaded, asked, max_chars, lambda s, *n: meter(f"eval {s}", *n))
    if not result["data_matches_run"]:
        err.print(
            f"warning: {result['data']} has changed since {loaded.name} was trained "
            "(its sha256 differs): these scores are on the new text",
            highlight=False,
        )
    if json_:
        out.print(json.dumps(result, indent=2), markup=False, highlight=False)
        return
    from rich.table import Table

    table = Table(title=f"{loaded.name} at step {loaded.step}")
    for col in ("split", "characters", "loss", "bits/char", "perplexity"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for name in asked:
        r = result["splits"][name]
        chars = f"{r['chars']:,}"
        if r.get("max_chars") is not None and r["scored_chars"] < r["chars"] - 1:
            chars = f"{r['scored_chars']:,} of {chars}"
        table.add_row(
            name, chars, f"{r['loss']:.4f}", f"{r['bits_per_char']:.4f}", f"{r['perplexity']:.3f}"
        )
    out.print(table)
    if loaded.run is None:
        return
    kept = [s for s in result["splits"] if s not in asked]
    also = f" (kept the {' and '.join(kept)} result from before)" if kept else ""
    err.print(f"saved {loaded.run.file('eval.json')}{also}", highlight=False)
