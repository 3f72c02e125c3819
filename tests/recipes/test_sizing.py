"""Presets sized to the machine: the largest shape of the ladder that makes the steps a
budget wants, chosen from timed steps, recorded, and never over an explicit choice."""

import json
import time

import pytest
import torch

from toygpt_cli.config import build_configs
from toygpt_cli.recipes import sizing
from toygpt_cli.recipes.presets import preset_options

from ..cli_helpers import toygpt


def test_the_steps_wanted_follow_the_measured_points_and_stay_flat_past_them():
    ladder = sizing.LADDERS["cpu-1m"]
    assert ladder.steps_wanted(5) == 500 and ladder.steps_wanted(20) == 500
    assert ladder.steps_wanted(60) == pytest.approx(1000)
    assert ladder.steps_wanted(3600) == 1000
    assert ladder.steps_wanted(20 * 3**0.5) == pytest.approx(500 * 2**0.5)  # log-log
    assert sizing.LADDERS["cpu"].steps_wanted(60) == sizing.LADDERS["cpu"].steps_wanted(6000)


@pytest.mark.parametrize("preset", sorted(sizing.LADDERS))
def test_each_ladder_tops_out_at_its_presets_own_values(preset):
    """--no-fit-machine and a fast machine train the preset exactly as it is declared."""
    top = sizing.LADDERS[preset].rungs[-1]
    model, train = build_configs(preset_options(preset))
    assert {k: getattr(model, k, getattr(train, k, None)) for k in top} == top


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
    assert s.record()["chosen"] == {"n_layer": shape[0], "n_embd": shape[1]}
    assert fitted.n_head == model.n_head and fitted.block_size == model.block_size


def test_a_real_probe_times_a_real_step():
    model, train = build_configs(preset_options("cpu-1m"), {"threads": 1, "batch_size": 2})
    assert 0 < sizing.probe_step(model, train) < 10


def test_a_step_slowed_by_other_work_does_not_decide_the_model(monkeypatch):
    # one of the probe's steps took 5 s (another program's burst): the fastest counts
    monkeypatch.setattr(sizing, "step_times", lambda trainer, steps: [5.0, 0.02, 0.03][:steps])
    model, train = build_configs(preset_options("cpu-1m"), {"threads": 1, "batch_size": 2})
    assert sizing.probe_step(model, train) == 0.02


def test_step_times_times_each_step_after_the_warm_up():
    class Trainer:
        calls = 0

        def train_step(self):
            self.calls += 1
            time.sleep(0.3 if self.calls == 3 else 0.0)  # the second timed step is slow
            return torch.zeros(()), 0.0

    trainer = Trainer()
    times = sizing.step_times(trainer, 3, warmup=1)
    assert trainer.calls == 4 and len(times) == 3
    assert times[1] >= 0.3 > max(times[0], times[2])
    assert sizing.seconds_per_step(Trainer(), 3) == pytest.approx(0.1, abs=0.05)


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
    assert "sized to this machine: 2 layers x 128, dropout 0," in r.stderr
    config = json.loads(next(runs.iterdir()).joinpath("config.json").read_text())
    assert config["model"]["n_layer"] == 2 and config["fit_machine"]["chosen"]["n_layer"] == 2
    assert [p["n_layer"] for p in config["fit_machine"]["probed"]] == [4, 3, 2]


@pytest.mark.parametrize(
    "args",
    [["--n-layer", "3"], ["--n-embd", "64"], ["--no-fit-machine"], ["--preset", "seed"]],
    ids=["n-layer", "n-embd", "no-fit", "a preset without a ladder"],
)
def test_an_explicit_shape_or_no_fitting_keeps_the_preset(dirs, corpus_file, quick_machine, args):
    _, runs = dirs
    preset = [] if "--preset" in args else ["--preset", "cpu-1m"]
    extra = ["--n-layer", "1", "--block-size", "16"] if "seed" in args else []
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


def test_the_ten_minute_preset_drops_dropout_where_it_makes_few_steps(monkeypatch):
    """Measured: dropout helped at 2,400 steps in ten minutes and more, and hurt at 1,200."""
    model, train = build_configs(preset_options("cpu"))
    slow, slow_sizing = sizing.fit_to_machine("cpu", model, train, time_step=lambda m, t: 0.5)
    fast, fast_sizing = sizing.fit_to_machine("cpu", model, train, time_step=lambda m, t: 0.25)
    assert (slow.dropout, fast.dropout) == (0.0, 0.05)
    assert slow.n_layer == fast.n_layer == model.n_layer  # only the regularisation changes
    # Muon's weight decay of 0.2 where a run makes even more steps, 0.05 below
    assert slow_sizing.train.muon_weight_decay == 0.05
    assert fast_sizing.train.muon_weight_decay == 0.2
    assert slow_sizing.train.max_time == train.max_time and slow_sizing.train.lr_schedule == (
        train.lr_schedule
    )
    longer = build_configs(preset_options("cpu"), {"max_time": 1800.0})
    assert sizing.fit_to_machine("cpu", *longer, time_step=lambda m, t: 0.5)[0].dropout == 0.05


@pytest.mark.parametrize(("step", "compiled", "decay"),
                         [(0.25, False, 0.05), (0.25, True, 0.2), (0.3, True, 0.05)])  # fmt: skip
def test_a_compiled_run_counts_the_faster_steps_it_will_make(step, compiled, decay):
    """The probe times the step uncompiled: 600 s at 250 ms is 2,400 steps, under the 2,880
    the stronger decay wants; compiled (1.3x) they are 3,120; at 300 ms, 2,600."""
    model, train = build_configs(preset_options("cpu"), {"compile": compiled})
    fitted, chosen = sizing.fit_to_machine("cpu", model, train, time_step=lambda m, t: step)
    assert fitted.dropout == 0.05 and chosen.train.muon_weight_decay == decay
    assert chosen.train.compile is compiled


def test_the_sizing_line_of_a_compiled_run_gives_the_uncompiled_step_not_a_step_count():
    model, train = build_configs(preset_options("cpu"))
    chosen = sizing.fit_to_machine("cpu", model, train, time_step=lambda m, t: 0.2512)[1]
    assert chosen.line(600.0) == (
        "sized to this machine: dropout 0.05, Muon decay 0.2, ~2,389 steps of 251 ms"
    )
    compiled = chosen.line(600.0, compiled=True)
    assert compiled == (
        "sized to this machine: dropout 0.05, Muon decay 0.2, 251 ms a step uncompiled"
    )
    assert len(compiled) <= 80


def test_a_given_dropout_keeps_the_ten_minute_preset(dirs, corpus_file, quick_machine):
    _, runs = dirs
    r = toygpt("train", "--preset", "cpu", "--dropout", "0.1", "--n-layer", "1", "--no-compile",
               "--block-size", "16", "--data", corpus_file, *SMALL, "--quiet")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert "sized to this machine" not in r.stderr


@pytest.mark.parametrize(
    ("step", "dropout", "decay"), [(0.001, 0.0, 0.05), (0.0004, 0.05, 0.05), (0.0001, 0.05, 0.2)]
)
def test_the_ten_minute_preset_trains_the_regularisation_it_chose(
    dirs, corpus_file, monkeypatch, step, dropout, decay
):
    """1 s at 1 ms a step is 1,000 steps (under 1,800: no dropout, the smaller decay); at
    0.4 ms 2,500 (dropout, but under 2,880: the smaller decay); at 0.1 ms, 10,000. The run
    trains what the line says, and config.json records it."""
    monkeypatch.setattr(sizing, "probe_step", lambda m, t: step)
    _, runs = dirs
    r = toygpt("train", "--preset", "cpu", "--n-layer", "1", "--block-size", "16",
               "--no-compile", "--data", corpus_file, *SMALL, "--quiet")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert f"sized to this machine: dropout {dropout:g}, Muon decay {decay:g}," in r.stderr
    config = json.loads(next(runs.iterdir()).joinpath("config.json").read_text())
    assert config["model"]["dropout"] == dropout
    assert config["train"]["muon_weight_decay"] == decay
    assert config["fit_machine"]["chosen"] == {"dropout": dropout, "muon_weight_decay": decay}


def test_the_ten_minute_preset_compiles_only_where_the_budget_earns_it_back(
    dirs, corpus_file, quick_machine, monkeypatch
):
    import torch

    compiled = []
    monkeypatch.setattr(torch, "compile", lambda model, mode=None: compiled.append(1) or model)
    _, runs = dirs
    small = ["--n-layer", "1", "--block-size", "16", "--data", corpus_file, *SMALL, "--quiet"]
    for extra, want in (([], False), (["--compile"], True)):  # 1 s: not unless asked
        r = toygpt("train", "--preset", "cpu", *extra, *small)
        assert r.exit_code == 0, r.stderr
        newest = max(runs.iterdir(), key=lambda p: p.stat().st_mtime_ns)
        assert json.loads((newest / "config.json").read_text())["train"]["compile"] is want
    assert len(compiled) == 1
    model, train = build_configs(preset_options("cpu"))
    assert train.compile and sizing.compile_pays(train)  # ten minutes: compiled
    assert not sizing.compile_pays(build_configs(preset_options("cpu"), {"max_time": 60.0})[1])
    steps = [
        build_configs(preset_options("cpu"), {"max_time": 0, "iters": n})[1] for n in (9, 5000)
    ]
    assert [sizing.compile_pays(t) for t in steps] == [False, True]  # no budget: by its steps
