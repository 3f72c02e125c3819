"""`toygpt eval`: score a run's checkpoint on its splits (whole, from one or several window
alignments, or a spread subset), with progress, merging the result into its eval.json."""

from __future__ import annotations

from toygpt_cli.cli.common import err, fancy_output, out, paths, print_json
from toygpt_cli.cli.meter import Meter
from toygpt_cli.cli.options import uses
from toygpt_cli.errors import UsageError


@uses(
    "run", "split", "max_chars", "offsets", "device", "dtype", "threads", "checkpoint", "json",
    "quiet", "runs_dir", dtype="float32",
)  # fmt: skip
def eval_(o) -> None:
    """Score a run's checkpoint on its splits (every character, or --max-chars of each)."""
    if o.offsets > 1 and o.max_chars is not None:
        raise UsageError("--offsets scores whole splits; it does not go with --max-chars")
    from toygpt_cli.device import set_threads
    from toygpt_cli.runs.inference import evaluate_run, load_for_inference

    set_threads(o.threads)
    loaded = load_for_inference(o.run, paths(runs_dir=o.runs_dir).runs_dir, o.checkpoint,
                                o.device, o.dtype)  # fmt: skip
    if not o.json:
        err.print(
            f"evaluating {loaded.label} ({loaded.checkpoint.name}, step {loaded.step}) "
            f"on {loaded.device}, {loaded.dtype}",
            highlight=False,
        )
    asked = ("train", "val") if o.split == "both" else (o.split,)
    with Meter(fancy_output(o.quiet or o.json), "chars", plain_done=not o.json) as meter:
        result = evaluate_run(
            loaded, asked, o.max_chars, lambda s, *n: meter(f"eval {s}", *n), o.offsets
        )
    if not result["data_matches_run"]:
        err.print(
            f"warning: {result['data']} has changed since {loaded.name} was trained "
            "(its sha256 differs): these scores are on the new text",
            highlight=False,
        )
    if o.json:
        print_json(result)
    else:
        _table(loaded, result, asked)
    if loaded.run is not None:
        kept = [s for s in result["splits"] if s not in asked]
        also = f" (kept the {' and '.join(kept)} result from before)" if kept else ""
        if result.get("whole_kept"):
            also += (
                f"; it keeps the whole {' and '.join(result['whole_kept'])} score from "
                "before, not this sample"
            )
        if result.get("saved"):
            err.print(f"saved {loaded.run.file('eval.json')}{also}", highlight=False)
        else:
            err.print(f"note: could not save eval.json: {result.get('save_error')}")


def _table(loaded, result, asked) -> None:
    from rich.table import Table

    offsets = result["splits"][asked[0]].get("offsets", 1)
    aligned = f", {offsets} window offsets" if offsets > 1 else ""
    table = Table(title=f"{loaded.label} at step {loaded.step}{aligned}")
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
