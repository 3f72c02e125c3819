"""`toygpt attention`: what each character of a prompt attends to, in every layer and head,
as a PNG grid and an HTML page you can point at."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text

from toygpt_cli.cli.common import err, out, paths
from toygpt_cli.cli.options import uses
from toygpt_cli.errors import UsageError


@uses("run", "look_at", "output", "checkpoint", "device", "runs_dir")
def attention(o) -> None:
    """Attention maps of a run's model for a prompt: attention.png (layers x heads) and
    attention.html (point at a character), in the run folder or at --output."""
    from toygpt_cli.reports.attention import attention_maps, write_outputs
    from toygpt_cli.runs.folder import ATTENTION
    from toygpt_cli.runs.inference import load_for_inference

    target = Path(o.output) if o.output else None
    if target is not None:  # checked before the model is read
        if target.suffix != ".html":
            raise UsageError("--output names the page: FILE.html (the grid goes to FILE.png)")
        if target.is_dir():
            raise UsageError(f"--output {target} is a folder; give a file name: FILE.html")
    if not o.look_at:
        raise UsageError("give a non-empty --prompt")
    loaded = load_for_inference(o.run, paths(runs_dir=o.runs_dir).runs_dir, o.checkpoint,
                                o.device, "float32")  # fmt: skip
    maps = attention_maps(loaded.model, loaded.tokenizer, o.look_at)
    if target is None:
        target = (loaded.run.file(ATTENTION[0]) if loaded.run is not None
                  else Path(loaded.checkpoint).with_suffix(".attention.html"))  # fmt: skip
    title = f"attention of {loaded.label} (step {loaded.step}): {o.look_at!r}"
    png = write_outputs(maps, o.look_at, title, target)
    err.print(Text(f"wrote {target} and {png}"))
    out.print(Text(str(target)))
