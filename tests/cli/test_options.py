"""cli/options.py: each option declared once; the command line, the generated reference and
the checks all come from the declaration."""

import re

from toygpt_cli.config import declared_fields
from toygpt_cli.parallel import distributed

from ..cli_helpers import toygpt
from ..conftest import TINY_ARGS


def test_every_declared_field_is_a_train_option_with_its_help():
    from toygpt_cli.cli.options import flag_of

    r = toygpt("train", "--help", env={"COLUMNS": "250"})
    assert r.exit_code == 0
    text = re.sub(r"\s+", " ", r.stdout)
    for _, f, opt in declared_fields():
        if opt.cli:
            assert flag_of(f.name) in text, f.name
            assert opt.help.split()[0] in text, f.name


def test_everyday_options_come_first_in_train_help():
    r = toygpt("train", "--help", env={"COLUMNS": "100"})
    lines = r.stdout.splitlines()
    first = next(i for i, line in enumerate(lines) if "--data" in line)
    assert first < next(i for i, line in enumerate(lines) if "--n-embd" in line)
    for flag in ("--preset", "--resume", "--name", "--max-time"):
        assert any(flag in line for line in lines[: first + 40]), flag


def test_device_dtype_and_threads_are_declared_once_for_every_command():
    from toygpt_cli.cli.options import declaration

    for name in ("device", "dtype", "threads"):
        help_text = declaration(name).metadata["opt"].help.split(".")[0]
        for command in (["train"], ["sample"], ["eval"], ["bench"]):
            r = toygpt(*command, "--help", env={"COLUMNS": "250"})
            assert help_text in re.sub(r"\s+", " ", r.stdout), (name, command)


def test_device_from_a_config_file_reaches_the_distributed_setup(
    dirs, corpus_file, tmp_path, monkeypatch
):
    seen = []
    real = distributed.Distributed.from_env.__func__

    def spy(cls, device="auto"):
        seen.append(device)
        return real(cls, device)

    monkeypatch.setattr(distributed.Distributed, "from_env", classmethod(spy))
    path = tmp_path / "c.toml"
    path.write_text('device = "cpu"\n')
    r = toygpt("train", "--config", path, "--data", corpus_file, *TINY_ARGS, "--iters", "2")
    assert r.exit_code == 0, r.stderr
    assert seen == ["cpu"]
