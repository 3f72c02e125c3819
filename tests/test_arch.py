"""The architecture options: rotary positions (`pos`), the modern block (`arch`) and logit
soft-capping, each on its own and together."""

import math

import pytest
import torch

from toygpt_cli.config import ModelConfig
from toygpt_cli.errors import OptionError
from toygpt_cli.layers import Rotary, apply_rotary, relu_squared, rope_angles
from toygpt_cli.model import GPT

from .cli_helpers import toygpt
from .conftest import TINY_ARGS

VARIANTS = {
    "rope": {"pos": "rope"},
    "modern": {"arch": "modern"},
    "softcap": {"logit_softcap": 2.0},
    "all": {"pos": "rope", "arch": "modern", "logit_softcap": 15.0},
}


def _model(seed=0, **kw) -> GPT:
    torch.manual_seed(seed)
    cfg = dict(vocab_size=65, block_size=16, n_embd=48, n_layer=2, n_head=6, dropout=0.0)
    model = GPT(ModelConfig(**{**cfg, **kw})).eval()
    if kw.get("arch") == "modern":
        # Zero-initialised projections make every position's logits equal at first, which
        # would hide any mixing between positions: give the weights values.
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.2)
    return model


@pytest.mark.parametrize("variant", VARIANTS)
def test_shapes(variant):
    model = _model(**VARIANTS[variant])
    idx = torch.randint(65, (3, 16))
    logits, loss, cache = model(idx, idx)
    assert logits.shape == (3, 16, 65) and loss.shape == ()
    assert len(cache) == 2 and cache[0][0].shape == (3, 6, 16, 8)


@pytest.mark.parametrize("variant", VARIANTS)
def test_later_characters_never_change_earlier_logits(variant):
    model = _model(**VARIANTS[variant])
    idx = torch.randint(65, (2, 16))
    changed = idx.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 65
    a, _, _ = model(idx)
    b, _, _ = model(changed)
    torch.testing.assert_close(a[:, :10], b[:, :10], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_rope_model_has_no_position_table_and_sees_order():
    model = _model(pos="rope")
    assert not any("pos_emb" in name for name in model.state_dict())
    idx = torch.randint(65, (1, 16))
    a, _, _ = model(idx)
    b, _, _ = model(idx.flip(1))
    assert not torch.allclose(a[:, -1], b[:, -1])  # the order of the characters matters


def test_rope_scores_depend_only_on_the_distance():
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(m, n):
        cq, sq = rope_angles(torch.tensor([m]), 8)
        ck, sk = rope_angles(torch.tensor([n]), 8)
        return (apply_rotary(q, cq, sq) * apply_rotary(k, ck, sk)).sum().item()

    assert score(5, 2) == pytest.approx(score(1005, 1002), abs=1e-5)
    assert score(5, 2) != pytest.approx(score(5, 3), abs=1e-3)


def test_rotary_angles_past_the_table_continue_it():
    rotary = Rotary(ModelConfig(block_size=8, n_embd=16, n_head=2, pos="rope"))
    cos, sin = rotary(0, 12)  # 4 positions past the table, computed on the fly
    assert torch.equal(cos[:8], rotary.cos) and torch.equal(sin[:8], rotary.sin)
    torch.testing.assert_close(cos[8:], rope_angles(torch.arange(8, 12), 8)[0])


def test_modern_block_has_no_biases_and_starts_uniform():
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=65, block_size=16, n_embd=48, n_layer=2, n_head=6,
                            arch="modern"))  # fmt: skip
    assert all(p.dim() == 2 for p in model.parameters())  # no biases, no norm gains
    for block in model.blocks:
        assert not block.attn.proj.weight.any() and not block.ffwd.proj.weight.any()
    _, loss, _ = model(torch.randint(65, (4, 16)), torch.randint(65, (4, 16)))
    assert loss.item() == pytest.approx(math.log(65), abs=1e-6)  # a zero head: uniform


def test_modern_with_tied_weights_keeps_a_nonzero_embedding():
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=65, n_embd=48, n_head=6, arch="modern", tie_weights=True))
    assert model.lm_head.weight is model.tok_emb.weight and model.tok_emb.weight.any()


def test_relu_squared_and_its_hand_written_gradient():
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.equal(relu_squared(x), torch.relu(x) ** 2)
    assert torch.autograd.gradcheck(relu_squared, (x,))


def test_logit_softcap_bounds_the_logits():
    model = _model(logit_softcap=2.0)
    with torch.no_grad():
        model.lm_head.weight.mul_(100)  # raw logits far beyond the cap
    logits, _, _ = model(torch.randint(65, (2, 16)))
    assert logits.abs().max() <= 2.0 and logits.abs().max() > 1.9


@pytest.mark.parametrize("variant", ["rope", "all"])
def test_kv_cache_matches_full_forward(variant):
    model = _model(**VARIANTS[variant])
    idx = torch.randint(65, (2, 12))
    full, _, _ = model(idx)
    _, _, cache = model(idx[:, :5])
    step, _, cache = model(idx[:, 5:6], cache=cache)
    torch.testing.assert_close(step[:, 0], full[:, 5], rtol=1e-5, atol=1e-5)
    rest, _, _ = model(idx[:, 6:], cache=cache)
    torch.testing.assert_close(rest, full[:, 6:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["rope", "all"])
def test_rolling_cache_is_sliding_window_attention(variant):
    # Past block_size, a rotary model attends to the last block_size positions; feeding one
    # position at a time through a cache that keeps only those gives the same logits.
    model = _model(**VARIANTS[variant])
    idx = torch.randint(65, (2, 50))
    full, _, _ = model(idx)  # (2, 50, 65): 50 > block_size 16
    _, _, cache = model(idx[:, :16])
    for t in range(16, 50):
        step, _, cache = model(idx[:, t : t + 1], cache=cache, position=t)
        assert cache[0][0].size(2) == 16  # the oldest position dropped out
        torch.testing.assert_close(step[:, 0], full[:, t], rtol=1e-5, atol=1e-5)
    # Sliding-window attention: what lies beyond the window reaches a position only
    # through the earlier positions' hidden states, and never in the first layer alone.
    one = _model(pos="rope", n_layer=1)
    a, _, _ = one(idx)
    b, _, _ = one(idx[:, -16:])
    torch.testing.assert_close(a[:, -1], b[:, -1], rtol=1e-5, atol=1e-5)


def test_learned_positions_still_refuse_more_than_block_size():
    with pytest.raises(ValueError, match="block_size"):
        _model()(torch.zeros(1, 17, dtype=torch.long))


def test_rope_needs_an_even_head_size():
    with pytest.raises(OptionError, match=r"even head size \(n_embd / n_head\), got 30/2 = 15"):
        ModelConfig(n_embd=30, n_head=2, pos="rope").validate()


def test_rope_with_an_odd_head_size_is_one_line_on_the_command_line(dirs, corpus_file):
    args = [*TINY_ARGS, "--n-embd", "36", "--n-head", "4", "--pos", "rope", "--iters", "2"]
    r = toygpt("train", "--data", corpus_file, *args)
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines() == [
        "error: --pos rope needs an even head size (--n-embd / --n-head), got 36/4 = 9"
    ]


def test_unknown_arch_is_refused():
    with pytest.raises(OptionError, match="arch must be one of gpt2, modern"):
        ModelConfig(arch="llama").validate()


@pytest.mark.parametrize("attn_dropout", [True, False])
def test_attention_dropout_can_be_left_out(attn_dropout):
    attn = _model(dropout=0.5, attn_dropout=attn_dropout).blocks[0].attn
    attn.resid_drop = torch.nn.Identity()  # leave only the dropout on the attention weights
    x = torch.randn(2, 16, 48)
    still = attn.eval()(x)[0]
    torch.manual_seed(1)
    trained = attn.train()(x)[0]
    assert torch.allclose(trained, still, atol=1e-6) == (not attn_dropout)
