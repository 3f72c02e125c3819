"""Each option is declared once: the CLI, the README and the resume check derive from it."""

import re
from dataclasses import replace
from pathlib import Path

import pytest

from toygpt_cli.config import (
    FIXED,
    ModelConfig,
    TrainConfig,
    declared_fields,
    flag_of,
    options_table,
    resume_configs,
)
from toygpt_cli.errors import OptionError
from toygpt_cli.parallel import distributed
from toygpt_cli.runs.session import resume_training, start_training

from .cli_helpers import toygpt
from .conftest import TINY_ARGS

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_declared_field_is_a_train_option_with_its_help():
    from typer.testing import CliRunner

    from toygpt_cli.cli.app import app

    r = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "250"})
    assert r.exit_code == 0
    text = re.sub(r"\s+", " ", r.stdout)
    for _, f, opt in declared_fields():
        if opt.cli:
            assert flag_of(f.name) in text, f.name
            assert opt.help.split()[0] in text, f.name


def test_readme_option_table_is_generated_from_the_declarations():
    # Regenerate with: python -c "from toygpt_cli.config import options_table as t; print(t())"
    assert options_table() in README.read_text(encoding="utf-8")


def test_library_errors_name_fields_and_the_cli_shows_flags():
    with pytest.raises(OptionError) as info:
        TrainConfig(batch_size=0).validate()
    assert str(info.value) == "batch_size must be greater than 0, got 0"
    assert info.value.render(flag_of) == "--batch-size must be greater than 0, got 0"


def test_fixed_fields_are_refused_and_the_rest_change_on_resume():
    model, train = ModelConfig(), TrainConfig()
    fixed = [f.name for _, f, opt in declared_fields() if opt.resume == FIXED and opt.cli]
    assert {"seed", "val_fraction", "n_layer", "block_size"} <= set(fixed)
    with pytest.raises(OptionError, match="seed is fixed"):
        resume_configs(model, train, {"seed": 1})
    new, changed = resume_configs(model, train, {"seed": 1337, "weight_decay": 0.0})
    assert new.weight_decay == 0.0 and changed == {"weight_decay": [0.01, 0.0]}


def _decays(trainer):
    return {g["name"]: g["weight_decay"] for g in trainer.optimizer.param_groups}


def test_weight_decay_from_zero_and_decay_matrices_only_take_effect_on_resume(
    corpus_file, tiny_model, tiny_train, tmp_path
):
    cfg = replace(tiny_train, iters=20, weight_decay=0.0)
    run = start_training(tiny_model, cfg, corpus_file, tmp_path).run().run
    resumed = resume_training(run, 5, {"weight_decay": 0.1})
    assert _decays(resumed) == {"matrices": 0.1, "vectors": 0.1}
    resumed.run()
    again = resume_training(run, 5, {"decay_matrices_only": True})
    assert _decays(again) == {"matrices": 0.1, "vectors": 0.0}
    assert again.run().status == "completed"
    assert run.config()["resumes"][-1]["changed"] == {"decay_matrices_only": [False, True]}


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
