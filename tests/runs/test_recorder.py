"""runs/recorder.py: the run folder written from the trainer's events, in an order that
never lists what is not on disk."""

import torch

from toygpt_cli.events import EvalDone, SampleWritten, StepDone, TrainEnded, TrainStarted
from toygpt_cli.runs.folder import Run
from toygpt_cli.runs.recorder import RunRecorder

from ..fake_runs import make_run


def _record(step, val):
    return {"step": step, "train_loss": val + 0.1, "val_loss": val, "lr": 1e-3,
            "tokens_per_sec": None, "elapsed": 1.0}  # fmt: skip


def test_events_become_the_run_files(tmp_path):
    run = Run(make_run(tmp_path, "r"))
    for name in ("metrics.jsonl", "samples.jsonl", "ckpt.pt", "best.pt"):
        run.file(name).unlink()
    rec = RunRecorder(run)
    rec(TrainStarted(run, 0, 20, 100, "cpu", "float32", False))
    assert run.raw_status()["status"] == "running"
    rec(EvalDone(_record(0, 4.0), improved=False))  # the quick first eval: never the best
    rec(EvalDone(_record(10, 3.0), improved=True))
    rec(SampleWritten(10, 1337, "To be"))
    rec(EvalDone(_record(20, 3.5), improved=False))
    for step in range(1, 41):
        rec(StepDone(step, 20, torch.tensor(2.5), 1e-3, 1.0, 10.0, 100.0))
    rec(TrainEnded("completed", 20, 20, 2.0))
    st = run.raw_status()
    assert st["status"] == "completed" and st["best_val"] == 3.0 and st["last_val"] == 3.5
    assert [m["step"] for m in run.metrics()] == [0, 10, 20]
    assert run.samples()[0]["text"] == "To be"
    assert run.trace()[0] == {"step": 10, "loss": 2.5, "lr": 1e-3, "elapsed": 1.0}


def test_checkpoints_as_keep_says(tmp_path):
    state = {"model": {"w": torch.ones(2)}, "optimizer": {}, "rng": {}, "scaler": None,
             "state": {"step": 1}, "live": {"w": torch.zeros(2)}}  # fmt: skip
    for keep, files in (("both", {"ckpt.pt", "best.pt"}), ("last", {"ckpt.pt"}),
                        ("best", {"ckpt.pt", "best.pt"})):  # fmt: skip
        run = Run(tmp_path / keep)
        run.path.mkdir()
        rec = RunRecorder(run, keep)
        rec.save_checkpoint(state, 1, best=True)
        assert {p.name for p in run.path.iterdir()} == files, keep
        best = torch.load(run.file("best.pt"), weights_only=True) if "best.pt" in files else {}
        assert "optimizer" not in best  # the weights alone: for sampling, not resuming
        assert "live" not in best  # with --ema: the average, not the training weights
        rec(TrainEnded("completed", 1, 1, 1.0))
        if keep == "best":
            assert not run.file("ckpt.pt").exists()  # only the best weights once completed


def test_the_end_is_recorded_even_when_the_disk_is_full(tmp_path, monkeypatch):
    from toygpt_cli.errors import ToygptError

    run = Run(make_run(tmp_path, "r", status="running"))
    rec = RunRecorder(run)
    real = Run.update_status

    def full(self, **fields):
        if fields.get("status") == "failed":
            raise ToygptError("could not write status.json: No space left on device")
        return real(self, **fields)

    monkeypatch.setattr(Run, "update_status", full)
    rec(TrainEnded("failed", 3, 20, 1.0, "could not write ckpt.pt"))  # no exception
