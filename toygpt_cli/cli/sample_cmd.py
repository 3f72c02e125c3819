"""`toygpt sample`: generate text from a run (text on stdout, status on stderr)."""

from __future__ import annotations

from typing import Annotated

import typer

from toygpt_cli.cli.common import (
    CheckpointOpt,
    DeviceOpt,
    DtypeOpt,
    RunRef,
    RunsDir,
    ThreadsOpt,
    err,
    handle_errors,
    out,
    paths,
)


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
    threads: ThreadsOpt = 0,
    runs_dir: RunsDir = None,
) -> None:
    """Generate text from a trained run (text on stdout, status on stderr)."""
    from toygpt_cli.errors import UsageError

    if temperature <= 0:
        raise UsageError(f"--temperature must be greater than 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {top_k}")
    from toygpt_cli.device import set_threads
    from toygpt_cli.inference import load_for_inference

    set_threads(threads)

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
