"""CUDA-only checks, skipped without a GPU; `python -m tests.gpu_check` runs them with the rest
of the GPU check (bench, the full default run, the nanogpt-char preset, sample, eval)."""

from dataclasses import replace

import pytest
import torch

from toygpt_cli.runs.checkpoint import load_checkpoint
from toygpt_cli.runs.session import resume_training, start_training

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_training_on_cuda_lowers_the_loss(corpus_file, tiny_model, tiny_train, tmp_path, dtype):
    cfg = replace(tiny_train, device="cuda", dtype=dtype, iters=150, eval_interval=150)
    result = start_training(tiny_model, cfg, corpus_file, tmp_path).run()
    losses = [m["val_loss"] for m in result.run.metrics()]
    assert result.run.config()["resolved"]["device"].startswith("cuda")
    assert losses[-1] < losses[0] - 0.5


def test_resume_on_cuda_is_exact(corpus_file, tiny_model, tiny_train, tmp_path):
    cfg = replace(tiny_train, device="cuda", dtype="float32", iters=40, eval_interval=20)
    straight = start_training(tiny_model, replace(cfg, iters=60), corpus_file, tmp_path / "a")
    straight = straight.run()
    first = start_training(tiny_model, cfg, corpus_file, tmp_path / "b").run()
    second = resume_training(first.run, 20).run()
    a = load_checkpoint(straight.run.file("ckpt.pt"))["model"]
    b = load_checkpoint(second.run.file("ckpt.pt"))["model"]
    for name, tensor in a.items():
        torch.testing.assert_close(tensor, b[name], rtol=0, atol=1e-6)


def test_compiled_step_in_cuda_graphs_trains(corpus_file, tiny_model, tiny_train, tmp_path):
    cfg = replace(
        tiny_train, device="cuda", iters=60, eval_interval=60, compile=True,
        compile_mode="reduce-overhead",
    )  # fmt: skip
    result = start_training(replace(tiny_model, dropout=0.0), cfg, corpus_file, tmp_path).run()
    losses = [m["val_loss"] for m in result.run.metrics()]
    assert result.status == "completed" and losses[-1] < losses[0]
