"""recipes/presets.py: the presets, and config files (TOML or a run's config.json)."""

import json

import pytest

from toygpt_cli.config import ModelConfig, TrainConfig, build_configs
from toygpt_cli.errors import UsageError
from toygpt_cli.recipes.presets import PRESETS, load_config_file

from ..cli_helpers import toygpt
from ..conftest import TINY_ARGS


def test_unknown_option_in_a_config_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("n_layers = 3\n")
    with pytest.raises(UsageError, match="unknown option 'n_layers'"):
        build_configs(load_config_file(path))


def test_toml_config_and_command_line_precedence(dirs, corpus_file, tmp_path):
    _, runs = dirs
    path = tmp_path / "exp.toml"
    path.write_text(
        f'data = "{corpus_file}"\niters = 12\n[model]\nn_embd = 48\nn_head = 4\n'
        "n_layer = 1\n[train]\nbatch_size = 4\nlearning_rate = 0.002\n"
    )
    r = toygpt("train", "--config", path, "--iters", "8", "--eval-iters", "2")
    assert r.exit_code == 0, r.stderr
    (run,) = runs.iterdir()
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["n_embd"] == 48 and cfg["model"]["n_layer"] == 1
    assert cfg["train"]["batch_size"] == 4 and cfg["train"]["learning_rate"] == 0.002
    assert cfg["train"]["iters"] == 8  # the command line wins
    assert cfg["data"]["path"] == str(corpus_file)


@pytest.mark.slow  # a long training
def test_like_and_config_json_reproduce_a_run(dirs, corpus_file):
    _, runs = dirs
    r = toygpt("train", "--data", corpus_file, *TINY_ARGS, "--iters", "6", "--lr", "2e-3")
    assert r.exit_code == 0, r.stderr
    (first,) = runs.iterdir()
    assert toygpt("train", "--like", first.name).exit_code == 0
    assert toygpt("train", "--config", first / "config.json").exit_code == 0
    runs_made = sorted(runs.iterdir())
    configs = [json.loads((p / "config.json").read_text()) for p in runs_made]
    assert len(configs) == 3
    for cfg in configs[1:]:
        assert cfg["model"] == configs[0]["model"] and cfg["train"] == configs[0]["train"]
    metrics = [(p / "metrics.jsonl").read_text() for p in runs_made]
    strip = [
        [
            {k: v for k, v in json.loads(line).items() if k in ("step", "train_loss", "val_loss")}
            for line in m.splitlines()
        ]
        for m in metrics
    ]
    assert strip[0] == strip[1] == strip[2]  # same seed, same configuration, same losses


def test_presets_apply_and_the_command_line_wins():
    m, t = build_configs(PRESETS["nanogpt-char"], {"iters": 7})
    assert (m.block_size, m.n_layer, m.n_head, m.n_embd, t.batch_size) == (256, 6, 6, 384, 64)
    assert t.lr_schedule == "cosine" and t.warmup_iters > 0 and t.iters == 7
    assert build_configs(PRESETS["seed"]) == (ModelConfig(), TrainConfig())
    _, t = build_configs(PRESETS["cpu"])  # raises if invalid: heads divide width, lr >= min_lr
    assert t.max_time == 600.0 and t.lr_schedule == "cosine" and t.iters == 0  # no step limit


def test_cpu_presets_build_and_todays_recipe_is_kept_beside_the_new_one():
    for name in ("cpu", "cpu-1m", "cpu-adamw"):
        _, t = build_configs(PRESETS[name])
        assert t.max_time > 0 and t.iters == 0, name
    m, t = build_configs(PRESETS["cpu"])
    assert (m.pos, m.arch, t.optimizer) == ("rope", "modern", "muon")
    assert (m.block_size, t.batch_size, m.dropout, m.attn_dropout) == (256, 12, 0.05, False)
    assert t.muon_weight_decay == 0.2  # 0.05 where the machine makes few steps
    m, t = build_configs(PRESETS["cpu-adamw"])
    assert (m.pos, m.arch, t.optimizer) == ("learned", "gpt2", "adamw")
    assert (m.n_layer, m.n_embd, t.batch_size, t.weight_decay) == (5, 128, 48, 0.3)


def test_nanogpt_char_is_nanogpts_shakespeare_char_recipe():
    m, t = build_configs(PRESETS["nanogpt-char"])
    assert (m.arch, m.tie_weights, m.emb_dropout, m.attn_dropout, m.dropout) == (
        "nanogpt",
        True,
        True,
        True,
        0.2,
    )
    assert (m.block_size, m.n_layer, m.n_head, m.n_embd, m.init) == (256, 6, 6, 384, "normal")
    assert (t.batch_size, t.iters, t.learning_rate, t.min_lr, t.warmup_iters) == (
        64,
        5000,
        1e-3,
        1e-4,
        100,
    )
    assert (t.beta2, t.weight_decay, t.decay_matrices_only, t.grad_clip) == (0.99, 0.1, True, 1.0)
    assert (t.lr_schedule, t.eval_interval, t.eval_iters) == ("cosine", 250, 200)


def test_a_cpu_preset_on_a_gpu_points_to_the_gpu_recipe():
    from toygpt_cli.recipes.presets import CPU_PRESETS, gpu_note

    for preset in CPU_PRESETS:
        assert preset in PRESETS
        assert gpu_note(preset, "cpu") is None
        for device in ("cuda", "mps"):
            assert f"--preset {preset} is sized for CPUs" in gpu_note(preset, device)
            assert "--preset nanogpt-char" in gpu_note(preset, device)
    assert gpu_note("nanogpt-char", "cuda") is None and gpu_note(None, "cuda") is None


@pytest.mark.parametrize("seen", ["cuda", "cpu"])
def test_train_says_the_gpu_note_only_where_the_device_is_a_gpu(dirs, corpus_file, monkeypatch,
                                                                seen):  # fmt: skip
    import torch

    import toygpt_cli.device as device

    real, calls = device.resolve_device, []

    def first_one_seen_as(name="auto"):  # the note's look at the device sees `seen`
        calls.append(name)
        return torch.device(seen) if len(calls) == 1 else real(name)

    monkeypatch.setattr(device, "resolve_device", first_one_seen_as)
    r = toygpt("train", "--preset", "cpu-adamw", "--device", "cpu", "--data", corpus_file,
               *TINY_ARGS, "--iters", "2", "--eval-interval", "2", "--quiet")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert ("is sized for CPUs" in r.stderr) == (seen == "cuda")
