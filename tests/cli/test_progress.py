"""The terminal progress display, driven through every event in both modes (steps and a
time budget), rendered the way a terminal would render it."""

import io

import pytest
import torch
from rich.console import Console

from toygpt_cli import events as ev
from toygpt_cli.cli.progress import TrainDisplay


def _record(step):
    return {
        "step": step, "train_loss": 2.0, "val_loss": 2.1, "lr": 1e-3,
        "tokens_per_sec": 1000.0, "elapsed": 1.0,
    }  # fmt: skip


def _terminal(width=160):
    """A live display drawn into a buffer as a terminal `width` columns wide would be."""
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=width)
    return buffer, TrainDisplay(fancy=True, console=console)


@pytest.mark.parametrize("max_time", [0.0, 30.0])
def test_every_phase_renders_on_a_terminal(max_time):
    buffer, display = _terminal()
    iters = 0 if max_time else 20
    with display:
        display(ev.TrainStarted(None, 0, iters, 1000, "cpu", "float32", False, max_time))
        for step in (0, 10):
            display(ev.PhaseStarted("eval", step, 128))
            display(ev.PhaseProgress("eval", 64, 128))
            display.progress.refresh()  # render now, as the live thread would
            assert "eval at step" in buffer.getvalue() and "64/128" in buffer.getvalue()
            display(ev.EvalDone(_record(step), True))
            display(ev.PhaseStarted("sample", step))
            display(ev.SampleWritten(step, 1, "text"))
            display(ev.PhaseStarted("checkpoint", step))
            display.progress.refresh()
            for s in range(step + 1, step + 11):
                display(ev.StepDone(s, iters, torch.tensor(2.5), 1e-3, 1.0, 10.0, 5000.0, 1.0))
        display(ev.EstimateReady(12.0, 100, 0.1, 2.0))
        display(ev.Notice("a note"))
        display.progress.refresh()
    text = buffer.getvalue()
    assert "note: a note" in text and "estimate: about 0:00:12" in text
    assert ("0:00:30" in text) == bool(max_time)  # the budget, not a step count
    assert ("step    10  train" if max_time else "step 10/20  train") in text  # eval lines


@pytest.mark.parametrize("max_time", [0.0, 600.0])
def test_at_80_columns_every_field_of_the_row_stays_whole(max_time):
    import re

    buffer, display = _terminal(width=80)
    iters = 0 if max_time else 5100
    with display:
        display(ev.TrainStarted(None, 0, iters, 1000, "cpu", "float32", False, max_time))
        display(ev.EvalDone(_record(0), True))
        for s in range(1, 1235):
            display(ev.StepDone(s, iters, torch.tensor(2.5), 1e-3, 1.0, 10.0, 5000.0, 300.0))
        display(ev.PhaseStarted("checkpoint", 1234))
        display.progress.refresh()
    frames = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", buffer.getvalue())
    row = [line for line in re.split(r"[\r\n]", frames) if "checkpoint" in line][-1]
    assert "…" not in row and "loss 2.5000" in row and "val 2.1000" in row, row
    assert ("step 1234" if max_time else "1234/5100") in row, row


def test_a_resumed_budget_starts_the_bar_where_the_budget_stands():
    _, display = _terminal()
    with display:
        display(ev.TrainStarted(None, 40, 0, 1000, "cpu", "float32", True, 600.0, 250.0,
                                None, 240.0))  # fmt: skip
        (task,) = display.progress.tasks
        assert 240.0 <= task.completed < 250.0 and task.total == 600.0
        assert "0:04:00 / 0:10:00" in task.fields["count"]


def test_eval_lines_of_a_resumed_budget_show_the_budget_not_the_runs_wall_time():
    buffer = io.StringIO()
    display = TrainDisplay(fancy=False, console=Console(file=buffer, width=160))
    record = _record(40) | {"elapsed": 900.0}  # the run's wall time, all sessions
    display(ev.TrainStarted(None, 40, 0, 1000, "cpu", "float32", True, 600.0, 850.0,
                            None, 240.0))  # fmt: skip
    display(ev.EvalDone(record, True))
    line = buffer.getvalue().strip().splitlines()[-1]
    assert "0:04:00/0:10:00" in line and "0:15:00" not in line
