"""`toygpt export`: write a run's weights as a .safetensors file other tools can load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from toygpt_cli.cli.common import (
    CheckpointOpt,
    JsonFlag,
    RunsDir,
    complete_run,
    err,
    handle_errors,
    paths,
)


@handle_errors
def export(
    run: Annotated[
        str,
        typer.Argument(
            help="A run: latest, latest~1, a folder name or a path.", autocompletion=complete_run
        ),
    ] = "latest",
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="File to write (default: model.safetensors in the run folder).",
        ),
    ] = None,
    checkpoint: CheckpointOpt = "auto",
    json_: JsonFlag = False,
    runs_dir: RunsDir = None,
) -> None:
    """Export a run's weights as safetensors, configuration and vocabulary in the metadata."""
    from toygpt_cli.errors import UsageError
    from toygpt_cli.runs.export import SUFFIX, export_run
    from toygpt_cli.runs.folder import open_run

    if output is not None and not output.name.endswith(SUFFIX):
        raise UsageError(f"--output must end in {SUFFIX} (sample and eval recognise it by that)")
    result = export_run(open_run(run, paths(runs_dir=runs_dir).runs_dir), output, checkpoint)
    if json_:
        print(json.dumps(result, indent=2))
        return
    tied = f"; tied {', '.join(result['tied'])} stored once" if result["tied"] else ""
    err.print(
        f"exported {result['run']} ({result['checkpoint']}, step {result['step']}): "
        f"{result['tensors']} tensors, {result['bytes'] / 1e6:.1f} MB{tied}",
        highlight=False,
    )
    print(result["output"])
