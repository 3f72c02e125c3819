"""device.py and what each device needs: no float64 anywhere on a device (Apple GPUs have
none), thread settings, and the CUDA checks (skipped without a GPU; `python -m
toygpt_cli.measure.gpu_check` runs them with the rest of the GPU check)."""

from dataclasses import replace

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from toygpt_cli.config import ModelConfig, TrainConfig
from toygpt_cli.corpus import corpus_from_text
from toygpt_cli.device import set_threads, usable_cpus
from toygpt_cli.errors import UsageError
from toygpt_cli.evaluate import split_loss
from toygpt_cli.runs.checkpoint import read_checkpoint
from toygpt_cli.runs.session import resume_training, start_training
from toygpt_cli.sample import sample_text
from toygpt_cli.train import Trainer

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


class NoFloat64(TorchDispatchMode):
    """Fails on any operation that makes a float64 tensor: what an Apple GPU (MPS) cannot
    do. toygpt does its double-precision accounting in Python floats, so on a CPU this
    guard stands in for the device."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.dtype == torch.float64:
                raise AssertionError(f"{func} made a float64 tensor")
        return out


def test_the_float64_guard_catches_float64():
    with pytest.raises(AssertionError, match="float64"), NoFloat64():
        torch.ones(2).double()


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_train_eval_and_sample_make_no_float64_for_mps(tiny_text, pos):
    corpus = corpus_from_text(tiny_text)
    rope = pos == "rope"
    model_cfg = ModelConfig(vocab_size=corpus.tokenizer.vocab_size, block_size=16, n_embd=32,
                            n_layer=2, n_head=4, pos=pos, arch="modern" if rope else "gpt2",
                            logit_softcap=15.0 if rope else 0.0)  # fmt: skip
    cfg = TrainConfig(iters=30, eval_interval=15, eval_iters=2, batch_size=8, sample_chars=40,
                      optimizer="muon" if pos == "rope" else "adamw", lr_schedule="cosine",
                      max_time=60.0, dtype="float32")  # fmt: skip
    with NoFloat64():
        trainer = Trainer(model_cfg, cfg, corpus)
        assert trainer.run().status == "completed"
        trainer.state_dict()
        _, val = corpus.splits()
        split_loss(trainer.model, val, 16, "float32", offsets=2)
        # past block_size: the rolling cache (rope) and the recomputed window (learned)
        text = sample_text(trainer.model, corpus.tokenizer, prompt="ROMEO:" * 5,
                           max_new_tokens=60, seed=1, top_p=0.9)[0]  # fmt: skip
    assert len(text) == 90


def test_threads_beyond_the_machine_are_refused():
    with pytest.raises(UsageError, match="more than the"):
        set_threads(usable_cpus() + 1)
    before = torch.get_num_threads()
    try:
        set_threads(0, generation=True)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@needs_cuda
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_training_on_cuda_lowers_the_loss(corpus_file, tiny_model, tiny_train, tmp_path, dtype):
    cfg = replace(tiny_train, device="cuda", dtype=dtype, iters=150, eval_interval=150)
    result = start_training(tiny_model, cfg, corpus_file, tmp_path).run()
    losses = [m["val_loss"] for m in result.run.metrics()]
    assert result.run.config()["resolved"]["device"].startswith("cuda")
    assert losses[-1] < losses[0] - 0.5


@needs_cuda
@pytest.mark.parametrize("recipe", ["seed", "cpu"])
def test_resume_on_cuda_is_exact(corpus_file, tiny_model, tiny_train, tmp_path, recipe):
    cfg = replace(tiny_train, device="cuda", dtype="float32", iters=40, eval_interval=20)
    if recipe == "cpu":  # the cpu preset's kind: modern block, its dropout, Muon, the average
        tiny_model = replace(tiny_model, pos="rope", arch="modern", dropout=0.1)
        cfg = replace(cfg, optimizer="muon", learning_rate=3e-3, ema=0.9)
    straight = start_training(tiny_model, replace(cfg, iters=60), corpus_file, tmp_path / "a")
    straight = straight.run()
    first = start_training(tiny_model, cfg, corpus_file, tmp_path / "b").run()
    second = resume_training(first.run, 20).run()
    a = read_checkpoint(straight.run.file("ckpt.pt")).data
    b = read_checkpoint(second.run.file("ckpt.pt")).data
    for part in ("model", "live") if recipe == "cpu" else ("model",):
        for name, tensor in a[part].items():
            torch.testing.assert_close(tensor, b[part][name], rtol=0, atol=1e-6)


@needs_cuda
def test_compiled_step_in_cuda_graphs_trains(corpus_file, tiny_model, tiny_train, tmp_path):
    cfg = replace(
        tiny_train, device="cuda", iters=60, eval_interval=60, compile=True,
        compile_mode="reduce-overhead",
    )  # fmt: skip
    result = start_training(replace(tiny_model, dropout=0.0), cfg, corpus_file, tmp_path).run()
    losses = [m["val_loss"] for m in result.run.metrics()]
    assert result.status == "completed" and losses[-1] < losses[0]


def _caches(root, levels):
    for i, (level, size) in enumerate(levels):
        (root / f"index{i}").mkdir()
        (root / f"index{i}" / "level").write_text(f"{level}\n")
        (root / f"index{i}" / "size").write_text(f"{size}\n")
    return root


def test_the_last_level_cache_is_read_from_linux_s_listing(tmp_path):
    from toygpt_cli.device import last_level_cache_bytes

    root = _caches(tmp_path, [(1, "48K"), (2, "2048K"), (3, "307200K")])
    assert last_level_cache_bytes.__wrapped__(root) == 300 * 2**20
    assert last_level_cache_bytes.__wrapped__(tmp_path / "absent") is None
    (root / "index2" / "size").write_text("1M\n")
    assert last_level_cache_bytes.__wrapped__(root) == 2**20
    (root / "index2" / "size").write_text("garbage\n")  # the last level's size is unknown
    assert last_level_cache_bytes.__wrapped__(root) is None


@pytest.mark.parametrize(
    "cache_mib, fast_bf16, n_params, expected",
    [
        (300, True, 7_000_000, "float32"),  # 28 MB of float32 weights sit in the cache
        (32, True, 7_000_000, "bfloat16"),  # they do not: bf16 halves what is read
        (None, True, 7_000_000, "bfloat16"),  # unknown cache: the 8 MiB rule
        (None, True, 1_000_000, "float32"),  # a small model is read from cache anyway
        (32, False, 7_000_000, "float32"),  # no bf16 instructions: never bf16
    ],
)
def test_auto_sampling_dtype_follows_the_cache(monkeypatch, cache_mib, fast_bf16, n_params,
                                               expected):  # fmt: skip
    from toygpt_cli import device

    size = None if cache_mib is None else cache_mib * 2**20
    monkeypatch.setattr(device, "last_level_cache_bytes", lambda: size)
    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: fast_bf16)
    cpu = torch.device("cpu")
    assert device.resolve_dtype("auto", cpu, generation=True, n_params=n_params) == expected
    assert device.resolve_dtype("float32", cpu, generation=True, n_params=n_params) == "float32"
