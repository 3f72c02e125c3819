"""`toygpt export`: write a run's weights as a .safetensors file other tools can load."""

from __future__ import annotations

from pathlib import Path

from toygpt_cli.cli.common import err, paths, print_json, write_out
from toygpt_cli.cli.options import uses


@uses("run_arg", "output", "checkpoint", "json", "runs_dir")
def export(o) -> None:
    """Export a run's weights as safetensors, configuration and vocabulary in the metadata
    (default file: model.safetensors in the run folder)."""
    from toygpt_cli.errors import UsageError
    from toygpt_cli.runs.export import SUFFIX, export_run
    from toygpt_cli.runs.folder import open_run

    output = Path(o.output) if o.output else None
    if output is not None and not output.name.endswith(SUFFIX):
        raise UsageError(f"--output must end in {SUFFIX} (sample and eval recognise it by that)")
    run = open_run(o.run_arg, paths(runs_dir=o.runs_dir).runs_dir)
    result = export_run(run, output, o.checkpoint)
    if o.json:
        print_json(result)
        return
    tied = f"; tied {', '.join(result['tied'])} stored once" if result["tied"] else ""
    err.print(
        f"exported {result['run']} ({result['checkpoint']}, step {result['step']}): "
        f"{result['tensors']} tensors, {result['bytes'] / 1e6:.1f} MB{tied}",
        highlight=False,
    )
    write_out(result["output"] + "\n")
