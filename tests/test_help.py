"""A clean --help (flags shown without a value, defaults plain) and shell completion."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .cli_helpers import toygpt

COMMANDS = [[], ["train"], ["sample"], ["eval"], ["bench"], ["export"], ["runs", "list"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "toygpt")
def test_help_shows_flags_without_a_value_and_plain_defaults(command):
    r = toygpt(*command, "--help")
    assert r.exit_code == 0, r.stderr
    assert "--help" in r.stdout
    assert "<bool>" not in r.stdout  # typer 0.29 put it after every flag
    assert "[default: (" not in r.stdout  # a show_default string, parenthesised by typer


def test_completion_is_installable():
    assert "--install-completion" in toygpt("--help").stdout
    r = toygpt("--show-completion", "bash")
    assert r.exit_code == 0 and "_TOYGPT_COMPLETE=complete_bash" in r.stdout


def test_run_names_complete_in_the_shell(tmp_path):
    runs = tmp_path / "runs"
    for name in ("20260101-000000", "20260102-000000", ".staging"):
        (runs / name).mkdir(parents=True)
        (runs / name / "config.json").write_text("{}")
    env = {
        **os.environ,
        "TOYGPT_RUNS_DIR": str(runs),
        "_TOYGPT_COMPLETE": "complete_bash",
        "COMP_WORDS": "toygpt sample --run ",
        "COMP_CWORD": "3",
    }
    r = subprocess.run(
        [sys.executable, "-m", "toygpt_cli"], env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["latest", "20260102-000000", "20260101-000000"]
    env["COMP_WORDS"] = "toygpt eval --run 202601"
    r = subprocess.run(
        [sys.executable, "-m", "toygpt_cli"], env=env, capture_output=True, text=True, timeout=60
    )
    assert r.stdout.split() == ["20260102-000000", "20260101-000000"]
