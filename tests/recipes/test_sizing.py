"""Presets sized to the machine: the largest shape of the ladder that makes the steps a
budget wants, chosen from timed steps, recorded, and never over an explicit choice."""

import json

import pytest

from toygpt_cli.config import build_configs
from toygpt_cli.recipes import sizing
from toygpt_cli.recipes.presets import preset_options

from ..cli_helpers import toygpt


def test_the_steps_wanted_follow_the_measured_points_and_stay_flat_past_them():
    assert sizing.steps_wanted(5) == 500 and sizing.steps_wanted(20) == 500
    assert sizing.steps_wanted(60) == pytest.approx(1000)
    assert sizing.steps_wanted(3600) == 1000
    assert sizing.steps_wanted(20 * 3**0.5) == pytest.approx(500 * 2**0.5)  # log-log


def _machine(ms_per_layer_width):
    """A fake machine: a step costs n_layer x n_embd x this many milliseconds."""
    return lambda m, t: m.n_layer * m.n_embd * ms_per_layer_width / 1000


@pytest.mark.parametrize(
    ("cost", "budget", "shape", "probes"),
    [
        (0.0001, 60.0, (4, 128), 1),  # fast: the preset's own shape, after one probe
        (0.1, 20.0, (3, 128), 2),  # 4x128: 20 s / 51.2 ms = 390 steps; 3x128: 520 >= 500
        (0.2, 20.0, (2, 96), 4),  # 2x128: 390 steps; 2x96: 20 s / 38.4 ms = 520
        (0.2, 60.0, (2, 128), 3),  # 60 s wants 1,000 steps: 3x128 781, 2x128 1,171
        (1.0, 20.0, (2, 64), 5),  # nothing makes 500 steps: the smallest
    ],
)
def test_the_largest_shape_that_makes_enough_steps_is_chosen(cost, budget, shape, probes):
    model, train = build_configs(preset_options("cpu-1m"), {"max_time": budget})
    fitted, s = sizing.fit_to_machine("cpu-1m", model, train, time_step=_machine(cost))
    assert (fitted.n_layer, fitted.n_embd) == shape and len(s.probed) == probes
    assert s.record()["shape"] == {"n_layer": shape[0], "n_embd": shape[1]}
    assert fitted.n_head == model.n_head and fitted.block_size == model.block_size


def test_a_real_probe_times_a_real_step():
    model, train = build_configs(preset_options("cpu-1m"), {"threads": 1, "batch_size": 2})
    assert 0 < sizing.probe_step(model, train) < 10


@pytest.fixture
def quick_machine(monkeypatch):
    """Every shape a step of 1 ms per layer: under a 1 s budget 2 layers make 500 steps."""
    monkeypatch.setattr(sizing, "probe_step", lambda m, t: m.n_layer * 0.001)


SMALL = ["--max-time", "1s", "--batch-size", "2", "--eval-iters", "1", "--threads", "1",
         "--sample-chars", "0"]  # fmt: skip


def test_a_sized_preset_says_and_records_its_shape(dirs, corpus_file, quick_machine):
    _, runs = dirs
    r = toygpt("train", "--preset", "cpu-1m", "--data", corpus_file, *SMALL, "--quiet")
    assert r.exit_code == 0, r.stderr
    assert "sized to this machine: 2 layers x 128" in r.stderr
    config = json.loads(next(runs.iterdir()).joinpath("config.json").read_text())
    assert config["model"]["n_layer"] == 2 and config["fit_machine"]["shape"]["n_layer"] == 2
    assert [p["n_layer"] for p in config["fit_machine"]["probed"]] == [4, 3, 2]


@pytest.mark.parametrize(
    "args",
    [["--n-layer", "3"], ["--n-embd", "64"], ["--no-fit-machine"], ["--preset", "cpu"]],
    ids=["n-layer", "n-embd", "no-fit", "other preset"],
)
def test_an_explicit_shape_or_no_fitting_keeps_the_preset(dirs, corpus_file, quick_machine, args):
    _, runs = dirs
    preset = [] if "--preset" in args else ["--preset", "cpu-1m"]
    extra = ["--n-layer", "1", "--block-size", "16"] if "cpu" in args else []
    r = toygpt("train", *preset, *args, *extra, "--data", corpus_file, *SMALL, "--quiet")
    assert r.exit_code == 0, r.stderr
    assert "sized to this machine" not in r.stderr
    config = json.loads(next(runs.iterdir()).joinpath("config.json").read_text())
    assert "fit_machine" not in config


def test_a_config_file_shape_keeps_the_preset(dirs, corpus_file, quick_machine, tmp_path):
    _, runs = dirs
    (tmp_path / "c.toml").write_text("n_layer = 1\n")
    r = toygpt("train", "--preset", "cpu-1m", "--config", tmp_path / "c.toml", "--data",
               corpus_file, *SMALL, "--quiet")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert (
        json.loads(next(runs.iterdir()).joinpath("config.json").read_text())["model"]["n_layer"]
        == 1
    )
