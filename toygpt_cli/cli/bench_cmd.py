"""`toygpt bench`: measure this machine's training, eval and sampling speed."""

from __future__ import annotations

from toygpt_cli.cli.common import err, out, print_json
from toygpt_cli.cli.options import uses


@uses("device", "dtype", "threads", "seconds", "json")
def bench(o) -> None:
    """Measure training, eval and sampling speed on this machine, and compare the recipes."""
    from toygpt_cli.device import set_threads
    from toygpt_cli.recipes.bench import run_benchmarks

    set_threads(o.threads)
    if not o.json:
        err.print("benchmarking the default configuration and the CPU presets...")
    result = run_benchmarks(device=o.device, dtype=o.dtype, seconds=o.seconds,
                            progress=None if o.json else _progress)  # fmt: skip
    if o.json:
        print_json(result)
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
    if result["recipes"]:
        out.print(_recipes_table(result["recipes"]))


def _progress(what: str) -> None:
    err.print(f"  {what}", highlight=False)


def _recipes_table(recipes):
    from rich.table import Table

    block = recipes[0]["sample_block"]
    table = Table(title=f"recipes (presets); sampling past block_size at block {block}")
    for name, justify in [
        ("preset", "left"), ("model", "left"), ("batch", "right"), ("train tokens/s", "right"),
        ("GFLOP/s (of its ceiling)", "right"),
        ("sampling chars/s, window recomputed", "right"), ("rolling cache", "right"),
        ("ratio", "right"),
    ]:  # fmt: skip
        table.add_column(name, justify=justify)
    for r in recipes:
        rolling = r["sample_rolling_chars_per_sec"]
        table.add_row(
            r["recipe"], r["shape"], r["batch"], f"{r['train_tokens_per_sec']:,.0f}",
            f"{r['train_gflops']:.0f} ({r['ceiling_fraction']:.0%})",
            f"{r['sample_window_chars_per_sec']:,.0f}",
            f"{rolling:,.0f}" if rolling else "- (learned positions)",
            f"{r['rolling_speedup']:.1f}x" if rolling else "",
        )  # fmt: skip
    return table
