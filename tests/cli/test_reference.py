"""cli/reference.py: docs/cli.md is every command's --help, and stays so."""

import inspect
from pathlib import Path

from toygpt_cli.cli import reference

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def test_the_cli_reference_is_current():
    assert DOCS.read_text(encoding="utf-8") == reference.render(), (
        "docs/cli.md is out of date: python -m toygpt_cli.cli.reference > docs/cli.md"
    )


def test_an_option_added_without_regenerating_fails_the_check(monkeypatch):
    from dataclasses import field, make_dataclass

    from toygpt_cli.cli import sample_cmd
    from toygpt_cli.cli.options import parameter
    from toygpt_cli.declare import Opt

    extra = make_dataclass("Extra", [("frobnicate", int, field(default=3, metadata={
        "opt": Opt("A new option.")}))])  # fmt: skip
    (new,) = [parameter(f) for f in extra.__dataclass_fields__.values()]
    signature = inspect.signature(sample_cmd.sample)
    params = [*signature.parameters.values(), new.replace(kind=inspect.Parameter.KEYWORD_ONLY)]
    monkeypatch.setattr(sample_cmd.sample, "__signature__", signature.replace(parameters=params))
    rendered = reference.render()
    assert "--frobnicate" in rendered and DOCS.read_text(encoding="utf-8") != rendered


def test_every_command_is_in_the_reference():
    text = DOCS.read_text(encoding="utf-8")
    for path in reference.commands():
        assert f"## `{' '.join(['toygpt', *path])}`" in text
