"""`toygpt runs`: list, show, compare and remove runs."""

from __future__ import annotations

import typer

app = typer.Typer(help="List, inspect, compare and remove runs.")
