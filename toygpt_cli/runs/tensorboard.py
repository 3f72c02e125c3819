"""TensorBoard logging: a listener that writes a run's metrics and samples as event files
with torch's own `torch.utils.tensorboard.SummaryWriter` (the optional `tensorboard` extra).

Scalars per eval: loss/train, loss/val, lr, tokens_per_sec; each per-eval sample as text.
Files go to `<run>/tb/`, so `tensorboard --logdir runs` shows every run.
"""

from __future__ import annotations

import importlib.util

from toygpt_cli.errors import ToygptError, install_hint
from toygpt_cli.events import EvalDone, SampleWritten, TrainEnded, TrainStarted
from toygpt_cli.runs.folder import TENSORBOARD


def require_tensorboard() -> None:
    if importlib.util.find_spec("tensorboard") is None:
        raise ToygptError(
            f"--tensorboard needs the tensorboard package: {install_hint('tensorboard')}"
        )


class TensorBoardLogger:
    """Writes to <run>/tb/ from the moment training starts (the run folder has its final
    name by then)."""

    def __init__(self, run):
        require_tensorboard()
        self.run, self.writer = run, None

    def __call__(self, event) -> None:
        if isinstance(event, TrainStarted):
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.run.file(TENSORBOARD)))
        if self.writer is None:
            return
        if isinstance(event, EvalDone):
            r, step = event.record, event.record["step"]
            self.writer.add_scalar("loss/train", r["train_loss"], step)
            self.writer.add_scalar("loss/val", r["val_loss"], step)
            self.writer.add_scalar("lr", r["lr"], step)
            if r.get("tokens_per_sec"):
                self.writer.add_scalar("tokens_per_sec", r["tokens_per_sec"], step)
            self.writer.flush()
        elif isinstance(event, SampleWritten):
            # Markdown would eat the verse's line breaks: show it as a code block.
            self.writer.add_text("sample", "```\n" + event.text + "\n```", event.step)
            self.writer.flush()
        elif isinstance(event, TrainEnded):
            self.writer.close()
