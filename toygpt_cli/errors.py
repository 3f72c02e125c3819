"""Errors a user can cause and fix. The CLI prints them as one line, never a traceback."""

from __future__ import annotations

import re
from collections.abc import Callable


class ToygptError(Exception):
    """A problem with the user's input or environment (exit code 1)."""

    exit_code = 1


class UsageError(ToygptError):
    """An invalid option or combination of options (exit code 2, like a CLI usage error)."""

    exit_code = 2


class OptionError(UsageError):
    """A bad value for configuration fields. The message names the fields as a library user
    knows them (`n_embd`); the command line shows its flags instead (`--n-embd`)."""

    def __init__(self, message: str, *fields: str):
        super().__init__(message)
        self.fields = fields

    def render(self, name: Callable[[str], str]) -> str:
        text = str(self)
        for f in self.fields:
            text = re.sub(rf"(?<![\w-]){re.escape(f)}(?![\w-])", name(f), text)
        return text


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message (its type when it has none), cut to `limit`."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__


def install_hint(extra: str) -> str:
    """How to install an optional extra, the way toygpt was installed: from a source
    checkout (editable, `pip install -e`) or as a package."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if (root / "pyproject.toml").is_file() and (root / ".git").exists():
        return f"pip install -e '{root}[{extra}]'"
    return f"pip install 'toygpt[{extra}]'"
