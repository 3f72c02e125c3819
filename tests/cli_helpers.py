from typer.testing import CliRunner

from toygpt_cli.cli.app import app, normalize_argv


def toygpt(*args: str):
    """Run the CLI in-process, as the console script would (stdout and stderr separate)."""
    return CliRunner().invoke(app, normalize_argv([str(a) for a in args]))
