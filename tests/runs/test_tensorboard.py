"""runs/tensorboard.py: TensorBoard event files beside the run's own files."""

import importlib.util
import json

import pytest

from toygpt_cli.errors import install_hint

from ..cli_helpers import toygpt
from ..conftest import TINY_ARGS

needs_tb = pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None, reason="tensorboard not installed"
)


@needs_tb
def test_tensorboard_events_hold_losses_lr_speed_and_samples(dirs, corpus_file):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, runs = dirs
    r = toygpt(
        "train", "--data", corpus_file, *TINY_ARGS, "--iters", "40", "--eval-interval", "20",
        "--tensorboard",
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    (run,) = runs.iterdir()
    events = EventAccumulator(str(run / "tb"), size_guidance={"tensors": 0}).Reload()
    tags = events.Tags()
    assert {"loss/train", "loss/val", "lr", "tokens_per_sec"} <= set(tags["scalars"])
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val = events.Scalars("loss/val")  # float32 in the event file
    assert [e.step for e in val] == [m["step"] for m in metrics]
    assert all(abs(e.value - m["val_loss"]) < 1e-5 for e, m in zip(val, metrics, strict=True))
    samples = events.Tensors("sample/text_summary")
    assert [s.step for s in samples] == [0, 20, 40]
    first = json.loads((run / "samples.jsonl").read_text().splitlines()[0])["text"]
    assert first in samples[0].tensor_proto.string_val[0].decode()
    # A resume keeps writing to the same place.
    assert toygpt("train", "--resume", "--steps", "20").exit_code == 0
    events = EventAccumulator(str(run / "tb")).Reload()
    assert [e.step for e in events.Scalars("loss/val")][-1] == 60


def test_tensorboard_without_the_extra_is_one_line(dirs, corpus_file, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name)
    )
    _, runs = dirs
    r = toygpt("train", "--data", corpus_file, *TINY_ARGS, "--iters", "2", "--tensorboard")
    assert r.exit_code == 1
    assert r.stderr.strip() == (
        f"error: --tensorboard needs the tensorboard package: {install_hint('tensorboard')}"
    )
    assert not runs.exists() or not list(runs.iterdir())
