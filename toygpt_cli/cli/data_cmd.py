"""`toygpt data fetch` and `toygpt data info`."""

from __future__ import annotations

from pathlib import Path

import typer

from toygpt_cli.cli.common import emit, err, fancy_output, out, paths, print_json
from toygpt_cli.cli.meter import Meter
from toygpt_cli.cli.options import uses

app = typer.Typer(help="Download and inspect datasets.", no_args_is_help=True)

VOCAB_SHOWN = 200  # characters of the vocabulary shown in the table (--json has them all)


@app.command()
@uses("url", "sha256", "refetch", "max_bytes", "timeout", "quiet", "json", "data_dir")
def fetch(o) -> None:
    """Download Tiny Shakespeare (or --url) into the data folder, checking its sha256."""
    from toygpt_cli.corpus.download import TINY_SHAKESPEARE_URL, fetch, parse_size

    target = paths(data_dir=o.data_dir).data_dir
    source = o.url or TINY_SHAKESPEARE_URL
    limit = parse_size(o.max_bytes)
    with _download_progress(not fancy_output(o.quiet or o.json)) as progress:
        result = fetch(
            source,
            target,
            sha256=o.sha256,
            force=o.refetch,
            timeout=o.timeout,
            max_bytes=limit,
            progress=progress,
        )
    if result.downloaded:
        err.print(f"downloaded {result.size:,} bytes to {result.path}", markup=False)
    else:
        err.print(f"{result.path} is already there and intact; nothing to do", markup=False)
    data = {
        "path": str(result.path),
        "bytes": result.size,
        "sha256": result.sha256,
        "downloaded": result.downloaded,
    }
    emit(data, lambda: err.print(f"sha256 {result.sha256}", highlight=False), o.json)


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
@uses("file", "data_dir", "json")
def info(o) -> None:
    """Show a dataset: path, size, characters, vocabulary, train/val split."""
    from toygpt_cli.corpus.cache import text_facts
    from toygpt_cli.corpus.download import (
        TINY_SHAKESPEARE_FILE,
        find_tiny_shakespeare,
        read_checksums,
    )
    from toygpt_cli.data import train_chars
    from toygpt_cli.errors import ToygptError

    folder = paths(data_dir=o.data_dir).data_dir
    path = Path(o.file) if o.file else find_tiny_shakespeare(folder)  # as train finds it
    if path is None:
        raise ToygptError(
            f"no Tiny Shakespeare in {folder} (looked for {TINY_SHAKESPEARE_FILE} and any file "
            "with its checksum); run `toygpt data fetch` first, or name a FILE"
        )
    # Read from the text itself, not from the token cache: what this prints is the truth.
    with Meter(fancy_output(o.json), "bytes") as meter:
        facts = text_facts(path, meter, trust=False)
    n_train = train_chars(facts.n_chars)  # at the default --val-fraction
    info = {
        "path": str(path),
        "bytes": facts.n_bytes,
        "chars": facts.n_chars,
        "vocab_size": len(facts.vocab),
        "vocab": facts.vocab,
        "train_chars": n_train,
        "val_chars": facts.n_chars - n_train,
        "sha256": facts.sha256,
        "recorded_sha256": read_checksums(path.parent).get(path.name),
    }
    if o.json:
        print_json(info)
        return
    from rich.table import Table

    table = Table(show_header=False, title="dataset")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")  # a checksum or a path is never cut short
    for key, value in info.items():
        if key == "vocab":  # a CJK vocabulary has thousands of characters: show its start
            shown = repr(value[:VOCAB_SHOWN]) + (" ..." if len(value) > VOCAB_SHOWN else "")
        elif value is None:
            shown = "-"
        else:
            shown = f"{value:,}" if isinstance(value, int) else str(value)
        table.add_row(key, shown)
    out.print(table)
