import math

import pytest
import torch

from toygpt_cli.config import ModelConfig
from toygpt_cli.errors import ToygptError
from toygpt_cli.model import GPT
from toygpt_cli.runs.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint

from .reference import SeedGPT, copy_into_seed

VOCAB = "".join(chr(33 + i) for i in range(65))


def _model(**kw) -> GPT:
    torch.manual_seed(0)
    cfg = dict(vocab_size=65, block_size=16, n_embd=48, n_layer=2, n_head=6, dropout=0.0)
    return GPT(ModelConfig(**{**cfg, **kw})).eval()


def test_output_shapes():
    model = _model()
    idx = torch.randint(65, (3, 16))
    logits, loss, cache = model(idx, idx)
    assert logits.shape == (3, 16, 65)
    assert loss.shape == ()
    assert len(cache) == 2 and cache[0][0].shape == (3, 6, 16, 8)


def test_causal_masking_later_characters_never_change_earlier_logits():
    model = _model()
    idx = torch.randint(65, (2, 16))
    changed = idx.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 65
    a, _, _ = model(idx)
    b, _, _ = model(changed)
    assert torch.equal(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])


@pytest.mark.parametrize("init", ["default", "normal"])
def test_loss_at_init_is_close_to_uniform(init):
    model = _model(init=init)
    idx = torch.randint(65, (16, 16))
    _, loss, _ = model(idx, torch.randint(65, (16, 16)))
    assert abs(loss.item() - math.log(65)) < 0.35


def test_fused_attention_matches_per_head_reference():
    model = _model(n_layer=3)
    seed = SeedGPT(65, block_size=16, n_embd=48, n_layer=3, n_head=6, dropout=0.0).eval()
    copy_into_seed(model, seed)
    idx = torch.randint(65, (4, 16))
    ours, _, _ = model(idx)
    ref, _ = seed(idx)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_kv_cache_matches_full_forward():
    model = _model()
    idx = torch.randint(65, (2, 12))
    full, _, _ = model(idx)
    _, _, cache = model(idx[:, :5])
    step, _, cache = model(idx[:, 5:6], cache=cache)
    torch.testing.assert_close(step[:, 0], full[:, 5], rtol=1e-5, atol=1e-5)
    rest, _, _ = model(idx[:, 6:], cache=cache)  # several new positions at once
    torch.testing.assert_close(rest, full[:, 6:], rtol=1e-5, atol=1e-5)


def test_context_longer_than_block_size_is_refused():
    with pytest.raises(ValueError, match="block_size"):
        _model()(torch.zeros(1, 17, dtype=torch.long))


@pytest.mark.parametrize("init", ["default", "normal"])
def test_tied_weights_share_one_tensor_and_start_near_uniform(init):
    model = _model(tie_weights=True, init=init)
    assert model.lm_head.weight is model.tok_emb.weight
    _, loss, _ = model(torch.randint(65, (8, 16)), torch.randint(65, (8, 16)))
    assert abs(loss.item() - math.log(65)) < 0.5


def test_checkpoint_round_trip_gives_identical_logits(tmp_path):
    model = _model()
    path = tmp_path / "ckpt.pt"
    save_checkpoint(
        path,
        {"model": model.state_dict(), "model_config": vars(model.config) | {}, "vocab": VOCAB},
    )
    loaded, tok = model_from_checkpoint(load_checkpoint(path))
    idx = torch.randint(65, (2, 16))
    assert torch.equal(model(idx)[0], loaded(idx)[0])
    assert tok.chars == VOCAB
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"model": _model().state_dict()})
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ToygptError, match=r"ckpt.pt is corrupt or truncated"):
        load_checkpoint(path)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "toygpt-checkpoint/1", "x": _Evil()}, path)
    with pytest.raises(ToygptError, match="pickled Python objects"):
        load_checkpoint(path)
