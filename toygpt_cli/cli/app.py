"""`toygpt`: the command-line entry point and its commands."""

from __future__ import annotations

import json
import sys
import warnings
from typing import Annotated

import typer

from toygpt_cli.cli import data_cmd, runs_cmd
from toygpt_cli.cli.common import (
    CheckpointOpt,
    DataDir,
    DeviceOpt,
    DtypeOpt,
    JsonFlag,
    RunRef,
    RunsDir,
    err,
    handle_errors,
    out,
    paths,
)
from toygpt_cli.cli.train_cmd import train

# torch warns at import when NumPy is absent; toygpt never uses NumPy.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

app = typer.Typer(
    name="toygpt",
    help="Train a small character-level GPT on Tiny Shakespeare (or any text), watch it "
    "learn, and sample from it.",
    no_args_is_help=True,
    add_completion=False,
    # A real bug shows a normal, short traceback without local variables.
    pretty_exceptions_show_locals=False,
    pretty_exceptions_short=True,
    rich_markup_mode="rich",
)
app.add_typer(data_cmd.app, name="data")
app.add_typer(runs_cmd.app, name="runs")
app.command(no_args_is_help=False)(train)


def _version(value: bool) -> None:
    if value:
        from toygpt_cli import __version__

        out.print(f"toygpt {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    pass


@app.command()
@handle_errors
def sample(
    run: RunRef = "latest",
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", "-n", min=1, help="Characters to generate.")
    ] = 500,
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="Text to continue.")] = "",
    temperature: Annotated[
        float, typer.Option("--temperature", "-t", help="Above 1 is wilder, below 1 is safer.")
    ] = 1.0,
    top_k: Annotated[
        int | None, typer.Option("--top-k", help="Sample only among the k likeliest characters.")
    ] = None,
    num_samples: Annotated[
        int, typer.Option("--num-samples", min=1, help="Independent samples, made in one batch.")
    ] = 1,
    seed: Annotated[int | None, typer.Option("--seed", help="Same seed, same text.")] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    checkpoint: CheckpointOpt = "auto",
    runs_dir: RunsDir = None,
) -> None:
    """Generate text from a trained run (text on stdout, status on stderr)."""
    from toygpt_cli.errors import UsageError

    if temperature <= 0:
        raise UsageError(f"--temperature must be greater than 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {top_k}")
    from toygpt_cli.inference import load_for_inference

    loaded = load_for_inference(run, paths(runs_dir=runs_dir).runs_dir, checkpoint, device, dtype)
    missing = loaded.tokenizer.unknown(prompt)
    if missing:
        raise UsageError(
            "the prompt has characters outside the run's vocabulary: "
            + " ".join(repr(c) for c in missing)
        )
    err.print(
        f"sampling from {loaded.run.name} ({loaded.checkpoint.name}, step {loaded.step}) "
        f"on {loaded.device}",
        highlight=False,
    )
    from toygpt_cli.sample import sample_text

    texts = sample_text(
        loaded.model,
        loaded.tokenizer,
        prompt=prompt,
        max_new_tokens=max_new_tokens,
        num_samples=num_samples,
        temperature=temperature,
        top_k=top_k,
        seed=seed,
        dtype=loaded.dtype,
    )
    for i, text in enumerate(texts):
        if num_samples > 1:
            err.print(f"[dim]--- sample {i + 1} ---[/]")
        out.print(text, markup=False, highlight=False)


@app.command("eval")
@handle_errors
def eval_(
    run: RunRef = "latest",
    split: Annotated[str, typer.Option("--split", help="train, val or both.")] = "both",
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    checkpoint: CheckpointOpt = "auto",
    json_: JsonFlag = False,
    runs_dir: RunsDir = None,
) -> None:
    """Score a run's checkpoint on every character of its splits: loss, bits/char, perplexity."""
    from toygpt_cli.errors import UsageError

    if split not in ("train", "val", "both"):
        raise UsageError(f"--split must be train, val or both, got {split!r}")
    from toygpt_cli.inference import evaluate_run, load_for_inference

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


@app.command()
@handle_errors
def bench(
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    seconds: Annotated[
        float, typer.Option("--seconds", min=0.5, help="Time spent on each measurement.")
    ] = 5.0,
    data_dir: DataDir = None,
    json_: JsonFlag = False,
) -> None:
    """Measure training, eval and sampling speed at the default model size on this machine."""
    from toygpt_cli.bench import run_benchmarks

    if not json_:
        err.print("benchmarking the default configuration (this takes a little while)...")
    result = run_benchmarks(device=device, dtype=dtype, seconds=seconds)
    if json_:
        out.print(json.dumps(result, indent=2), markup=False, highlight=False)
        return
    from rich.table import Table

    table = Table(
        title=f"toygpt bench: {result['device']}, {result['dtype']}, "
        f"{result['threads']} threads, torch {result['torch']}"
    )
    table.add_column("measurement")
    table.add_column("result", justify="right")
    table.add_column("note")
    for row in result["rows"]:
        table.add_row(row["name"], row["value"], row.get("note", ""))
    out.print(table)


def normalize_argv(args: list[str]) -> list[str]:
    """`--resume` takes an optional run: a bare `--resume` means `--resume latest`.

    (Typer has no optional-value options, so the default is filled in here.)
    """
    fixed = list(args)
    for i, arg in enumerate(fixed):
        if arg == "--":
            break
        if arg == "--resume" and (i + 1 == len(fixed) or fixed[i + 1].startswith("-")):
            fixed.insert(i + 1, "latest")
            break
    return fixed


def main(argv: list[str] | None = None) -> None:
    app(args=normalize_argv(sys.argv[1:] if argv is None else argv), prog_name="toygpt")
