"""`toygpt bench`: measure this machine's training, eval and sampling speed."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from toygpt_cli.cli.common import (
    DataDir,
    DeviceOpt,
    DtypeOpt,
    JsonFlag,
    ThreadsOpt,
    err,
    handle_errors,
    out,
)


@handle_errors
def bench(
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    threads: ThreadsOpt = 0,
    seconds: Annotated[
        float, typer.Option("--seconds", min=0.5, help="Time spent on each measurement.")
    ] = 5.0,
    data_dir: DataDir = None,
    json_: JsonFlag = False,
) -> None:
    """Measure training, eval and sampling speed at the default model size on this machine."""
    from toygpt_cli.bench import run_benchmarks
    from toygpt_cli.device import set_threads

    set_threads(threads)

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
