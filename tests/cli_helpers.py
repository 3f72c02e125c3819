"""Running the command line in-process, exactly as the console script does (through
`main`, so usage errors, Ctrl-C and closed pipes are handled as for a user)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from typer.testing import CliRunner

from toygpt_cli.cli.app import main


@dataclass
class Result:
    stdout: str
    stderr: str
    exit_code: int


def toygpt(*args, input: str | bytes | None = None, env: dict | None = None) -> Result:
    """Run `toygpt ARGS` in this process; stdout and stderr separately, and the exit code."""
    with CliRunner().isolation(input=input, env=env) as (out, err, _):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        return Result(out.getvalue().decode(), err.getvalue().decode(), code)
