"""config.py: every option declared once: defaults, checks, layers, and the messages that
name fields (the command line shows them as flags)."""

import pytest

from toygpt_cli.config import ModelConfig, TrainConfig, build_configs, declared_fields
from toygpt_cli.errors import OptionError


def test_defaults_are_the_seeds():
    m, t = ModelConfig(), TrainConfig()
    assert (m.block_size, m.n_embd, m.n_layer, m.n_head, m.dropout) == (16, 384, 4, 6, 0.2)
    assert (t.batch_size, t.iters, t.eval_interval, t.eval_iters) == (32, 5100, 300, 200)
    assert (t.learning_rate, t.seed, t.val_fraction, t.lr_schedule) == (1e-3, 1337, 0.1, "constant")
    assert m.init == "default" and not m.tie_weights and t.grad_clip == 0


def test_layers_later_wins_and_none_means_not_given():
    m, t = build_configs({"n_layer": 6, "iters": 10}, {"n_layer": 2, "iters": None})
    assert m.n_layer == 2 and t.iters == 10


def test_library_errors_name_fields_and_the_cli_shows_flags():
    from toygpt_cli.cli.options import flag_of

    with pytest.raises(OptionError) as info:
        TrainConfig(batch_size=0).validate()
    assert str(info.value) == "batch_size must be greater than 0, got 0"
    assert info.value.render(flag_of) == "--batch-size must be greater than 0, got 0"


def test_every_field_is_declared_with_help_and_a_policy():
    for _, f, opt in declared_fields():
        assert opt.help and opt.resume in ("fixed", "change", "steps"), f.name


def test_bounds_choices_and_types_come_from_the_declaration():
    for bad, message in (
        (ModelConfig(dropout=1.0), r"dropout must be in \[0, 1\)"),
        (ModelConfig(arch="x"), "arch must be one of gpt2, nanogpt, modern"),
        (ModelConfig(n_layer="2"), "n_layer must be an integer"),
        (TrainConfig(learning_rate=float("nan")), "learning_rate must be a finite number"),
        (TrainConfig(max_time="1e300h"), "max_time is too long: at most 365 days"),
        (TrainConfig(keep="none"), "keep must be one of both, last, best"),
    ):
        with pytest.raises(OptionError, match=message):
            bad.validate()
    cfg = TrainConfig(max_time="10m", learning_rate=1)  # parsed and widened
    cfg.validate()
    assert cfg.max_time == 600.0 and isinstance(cfg.learning_rate, float)
