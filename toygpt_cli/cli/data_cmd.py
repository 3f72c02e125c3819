"""`toygpt data fetch` and `toygpt data info`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from toygpt_cli.cli.common import DataDir, JsonFlag, err, fancy_output, handle_errors, out, paths

app = typer.Typer(help="Download and inspect datasets.", no_args_is_help=True)


@app.command()
@handle_errors
def fetch(
    url: Annotated[
        str | None, typer.Option("--url", help="Fetch another plain-text corpus instead.")
    ] = None,
    sha256: Annotated[
        str | None, typer.Option("--sha256", help="Expected sha256 of the file (hex).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Download again even if present.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Download Tiny Shakespeare (or --url) into the data folder, checking its sha256."""
    from toygpt_cli.download import TINY_SHAKESPEARE_URL, fetch

    target = paths(data_dir=data_dir).data_dir
    source = url or TINY_SHAKESPEARE_URL
    with _download_progress(not fancy_output(quiet)) as progress:
        result = fetch(source, target, sha256=sha256, force=force, progress=progress)
    if result.downloaded:
        err.print(f"downloaded {result.size:,} bytes to {result.path}", highlight=False)
    else:
        err.print(f"{result.path} is already there and intact; nothing to do", highlight=False)
    err.print(f"sha256 {result.sha256}", highlight=False)


class _download_progress:
    """A rich download bar as a fetch progress callback (or nothing when plain)."""

    def __init__(self, plain: bool):
        self.plain = plain
        self.progress = None
        self.task = None

    def __enter__(self):
        if self.plain:
            return None
        from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

        self.progress = Progress(
            *Progress.get_default_columns(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=err,
            transient=True,
        )
        self.progress.start()
        self.task = self.progress.add_task("download", total=None)
        return self

    def __call__(self, done: int, total: int | None) -> None:
        self.progress.update(self.task, completed=done, total=total)

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()


@app.command()
@handle_errors
def info(
    file: Annotated[
        Path | None,
        typer.Argument(help="A text file; default: Tiny Shakespeare in the data folder."),
    ] = None,
    data_dir: DataDir = None,
    json_: JsonFlag = False,
) -> None:
    """Show a dataset: path, size, characters, vocabulary, train/val split."""
    from toygpt_cli.data import Corpus
    from toygpt_cli.download import TINY_SHAKESPEARE_FILE, read_checksums
    from toygpt_cli.errors import ToygptError

    folder = paths(data_dir=data_dir).data_dir
    path = file or folder / TINY_SHAKESPEARE_FILE
    if not path.exists() and file is None:
        raise ToygptError(f"no dataset at {path}; run `toygpt data fetch` first")
    corpus = Corpus.load(path)
    info = {
        "path": str(path),
        "bytes": path.stat().st_size,
        "chars": len(corpus.text),
        "vocab_size": corpus.tokenizer.vocab_size,
        "vocab": corpus.tokenizer.chars,
        "train_chars": corpus.n_train,
        "val_chars": len(corpus.text) - corpus.n_train,
        "sha256": corpus.sha256,
        "recorded_sha256": read_checksums(path.parent).get(path.name),
    }
    if json_:
        out.print(json.dumps(info, indent=2), markup=False, highlight=False)
        return
    from rich.table import Table

    table = Table(show_header=False, title="dataset")
    table.add_column(style="bold")
    table.add_column()
    for key, value in info.items():
        shown = (
            repr(value)
            if key == "vocab"
            else (f"{value:,}" if isinstance(value, int) else str(value))
        )
        table.add_row(key, shown)
    out.print(table)
