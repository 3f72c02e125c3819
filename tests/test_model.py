"""model.py: the GPT, its variants (arch, pos, logit soft-capping), and its generation path
with a key/value cache."""

import math

import pytest
import torch
import torch.nn.functional as F

from toygpt_cli.config import ModelConfig
from toygpt_cli.errors import OptionError
from toygpt_cli.fused import (
    Dropout,
    attend,
    keep_mask,
    norm_rotary,
    relu_squared,
    rms_norm_to,
)
from toygpt_cli.measure.seed_reference import SeedGPT, copy_into_seed
from toygpt_cli.model import (
    GPT,
    RMS_EPS,
    Rotary,
    Variant,
    apply_rotary,
    rms_norm,
    rope_angles,
)
from toygpt_cli.sample import KVCache

VARIANTS = {
    "gpt2": {},
    "nanogpt": {"arch": "nanogpt"},
    "rope": {"pos": "rope"},
    "modern": {"arch": "modern"},
    "softcap": {"logit_softcap": 2.0},
    "all": {"pos": "rope", "arch": "modern", "logit_softcap": 15.0},
    "tricks": {"pos": "rope", "arch": "modern", "bigram": True, "x0_skip": True,
               "attn_scale": 0.3},
    "tricks-learned": {"bigram": True, "x0_skip": True},
}  # fmt: skip
TRICKS = ("bigram", "x0_skip")


def _model(seed=0, **kw) -> GPT:
    torch.manual_seed(seed)
    cfg = dict(vocab_size=65, block_size=16, n_embd=48, n_layer=2, n_head=6, dropout=0.0)
    model = GPT(ModelConfig(**{**cfg, **kw})).eval()
    if kw.get("arch") == "modern" or any(kw.get(t) for t in TRICKS):
        # Zero-initialised projections make every position's logits equal at first, which
        # would hide any mixing between positions: give the weights values.
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.2)
    return model


def _cached(model, idx, start, end=None):
    """Logits of idx[:, start:end] fed through a cache that first took in idx[:, :start]."""
    cache = KVCache(model.config.n_layer, model.config.block_size)
    model(idx[:, :start], cache=cache, position=0)
    return model(idx[:, start:end], cache=cache, position=start)[0], cache


@pytest.mark.parametrize("variant", VARIANTS)
def test_shapes_and_loss(variant):
    model = _model(**VARIANTS[variant])
    idx = torch.randint(65, (3, 16))
    logits, loss = model(idx, idx)
    assert logits.shape == (3, 16, 65) and loss.shape == ()
    assert model(idx)[1] is None  # no targets, no loss


@pytest.mark.parametrize("variant", VARIANTS)
def test_later_characters_never_change_earlier_logits(variant):
    model = _model(**VARIANTS[variant])
    idx = torch.randint(65, (2, 16))
    changed = idx.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 65
    a, b = model(idx)[0], model(changed)[0]
    torch.testing.assert_close(a[:, :10], b[:, :10], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, 10:], b[:, 10:])


@pytest.mark.parametrize("init", ["default", "normal"])
def test_loss_at_init_is_close_to_uniform(init):
    model = _model(init=init)
    _, loss = model(torch.randint(65, (16, 16)), torch.randint(65, (16, 16)))
    assert abs(loss.item() - math.log(65)) < 0.35


def test_fused_attention_matches_the_per_head_reference():
    model = _model(n_layer=3)
    seed = SeedGPT(65, block_size=16, n_embd=48, n_layer=3, n_head=6, dropout=0.0).eval()
    copy_into_seed(model, seed)
    idx = torch.randint(65, (4, 16))
    torch.testing.assert_close(model(idx)[0], seed(idx)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["gpt2", "rope", "all", "tricks", "tricks-learned"])
def test_kv_cache_matches_the_full_forward(variant):
    model = _model(**VARIANTS[variant])
    idx = torch.randint(65, (2, 12))
    full = model(idx)[0]
    step, cache = _cached(model, idx, 5, 6)
    torch.testing.assert_close(step[:, 0], full[:, 5], rtol=1e-5, atol=1e-5)
    rest = model(idx[:, 6:], cache=cache, position=6)[0]  # several new positions at once
    torch.testing.assert_close(rest, full[:, 6:], rtol=1e-5, atol=1e-5)


def test_a_cache_needs_the_position():
    model, idx = _model(), torch.randint(65, (1, 4))
    with pytest.raises(ValueError, match="position"):
        model(idx, cache=KVCache(2, 16))


@pytest.mark.parametrize("variant", ["rope", "all", "tricks"])
def test_rolling_cache_is_sliding_window_attention(variant):
    # Past block_size, a rotary model attends to the last block_size positions; feeding one
    # position at a time through a cache that keeps only those gives the same logits.
    model = _model(**VARIANTS[variant])
    idx = torch.randint(65, (2, 50))
    full = model(idx)[0]  # (2, 50, 65): 50 > block_size 16
    cache = KVCache(model.config.n_layer, 16)
    model(idx[:, :16], cache=cache, position=0)
    for t in range(16, 50):
        step = model(idx[:, t : t + 1], cache=cache, position=t)[0]
        assert cache.keys[0].size(2) == 16  # the oldest position dropped out
        torch.testing.assert_close(step[:, 0], full[:, t], rtol=1e-5, atol=1e-5)
    # What lies beyond the window reaches a position only through the earlier positions'
    # hidden states, and never in the first layer alone.
    one = _model(pos="rope", n_layer=1)
    torch.testing.assert_close(one(idx)[0][:, -1], one(idx[:, -16:])[0][:, -1], rtol=1e-5,
                               atol=1e-5)  # fmt: skip


def test_learned_positions_refuse_more_than_block_size():
    with pytest.raises(ValueError, match="block_size"):
        _model()(torch.zeros(1, 17, dtype=torch.long))


def test_rope_model_has_no_position_table_and_sees_order():
    model = _model(pos="rope")
    assert not any("pos_emb" in name for name in model.state_dict())
    idx = torch.randint(65, (1, 16))
    assert not torch.allclose(model(idx)[0][:, -1], model(idx.flip(1))[0][:, -1])


def test_rope_scores_depend_only_on_the_distance():
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(m, n):
        (cq, sq), (ck, sk) = rope_angles(m, 1, 8), rope_angles(n, 1, 8)
        return (apply_rotary(q, cq, sq) * apply_rotary(k, ck, sk)).sum().item()

    assert score(5, 2) == pytest.approx(score(1005, 1002), abs=1e-5)
    assert score(5, 2) != pytest.approx(score(5, 3), abs=1e-3)


def test_rotary_angles_past_the_table_continue_it():
    rotary = Rotary(head_size=8, block_size=8)
    cos, sin = rotary(0, 8)
    far_cos, _ = rotary(8, 4)  # 4 positions past the table, computed on the fly
    assert torch.equal(cos, rotary.cos) and torch.equal(sin, rotary.sin)
    torch.testing.assert_close(far_cos, rope_angles(8, 4, 8)[0])
    assert torch.equal(rope_angles(3, 2, 8)[0], rotary.cos[3:5])  # the same numbers
    # far positions keep their precision: angle = position x frequency, in double precision
    assert rope_angles(10**7, 1, 8)[0][0, 0].item() == pytest.approx(math.cos(10**7), abs=1e-6)


def test_modern_block_has_no_biases_and_starts_uniform():
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=65, block_size=16, n_embd=48, n_layer=2, n_head=6,
                            arch="modern"))  # fmt: skip
    assert all(p.dim() == 2 for p in model.parameters())  # no biases, no norm gains
    for block in model.blocks:
        assert not block.attn.proj.weight.any() and not block.ffwd.proj.weight.any()
    _, loss = model(torch.randint(65, (4, 16)), torch.randint(65, (4, 16)))
    assert loss.item() == pytest.approx(math.log(65), abs=1e-6)  # a zero head: uniform


def test_nanogpt_block_is_layernorm_and_gelu_without_biases():
    model = _model(arch="nanogpt")
    variant = Variant.of(model.config)
    assert variant.activation is torch.nn.functional.gelu and not variant.bias
    assert not [n for n, _ in model.named_parameters() if n.endswith("bias")]
    assert isinstance(model.blocks[0].ln1, torch.nn.LayerNorm)


@pytest.mark.parametrize("init", ["default", "normal"])
def test_tied_weights_share_one_tensor_and_start_near_uniform(init):
    model = _model(tie_weights=True, init=init)
    assert model.lm_head.weight is model.tok_emb.weight
    _, loss = model(torch.randint(65, (8, 16)), torch.randint(65, (8, 16)))
    assert abs(loss.item() - math.log(65)) < 0.5


def test_modern_with_tied_weights_keeps_a_nonzero_embedding():
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=65, n_embd=48, n_head=6, arch="modern", tie_weights=True))
    assert model.lm_head.weight is model.tok_emb.weight and model.tok_emb.weight.any()


@pytest.mark.parametrize("start", [0, 7])
def test_norm_rotary_is_the_norm_then_the_rotation_with_its_own_gradient(start):
    """fused.norm_rotary against model.rms_norm then model.apply_rotary: the same values,
    and a hand-written backward that gradcheck confirms (double precision)."""
    hs, T = 8, 5
    cos, sin = rope_angles(start, T, hs)
    qkv = torch.randn(3, T, 3, 2, hs, dtype=torch.float64, requires_grad=True)
    c, s = cos.double()[:, None, None], sin.double()[:, None, None]

    def qk(t):  # queries and keys as the model takes them: a view of the projection
        return t.split([2, 1], dim=2)[0]

    fused = norm_rotary(qk(qkv), c, s, RMS_EPS)
    apart = apply_rotary(rms_norm(qk(qkv)), c, s)
    torch.testing.assert_close(fused, apart)
    g = torch.randn_like(fused).transpose(0, 1).contiguous().transpose(0, 1)  # strided
    (want,) = torch.autograd.grad(apart, qkv, g)
    (got,) = torch.autograd.grad(fused, qkv, g)
    torch.testing.assert_close(got, want)
    assert torch.autograd.gradcheck(lambda t: norm_rotary(qk(t), c, s, RMS_EPS), (qkv,))
    x32 = qkv.detach()[:, :, :2].float()
    low = norm_rotary(x32.bfloat16(), cos[:, None, None], sin[:, None, None], RMS_EPS)
    ref = apply_rotary(rms_norm(x32), cos[:, None, None], sin[:, None, None])
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), ref, atol=0.03, rtol=0.02)


def test_rms_norm_to_is_the_norm_with_its_own_gradient_written_in_the_autocast_dtype():
    x = torch.randn(3, 5, 8, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(rms_norm_to(x, RMS_EPS), rms_norm(x))
    assert torch.autograd.gradcheck(lambda t: rms_norm_to(t, RMS_EPS), (x,))
    x32 = x.detach().float().requires_grad_()
    g = torch.randn(3, 5, 8)
    (want,) = torch.autograd.grad(rms_norm(x32), x32, g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = rms_norm_to(x32, RMS_EPS)
    assert low.dtype == torch.bfloat16  # what the next linear layer reads, without a copy
    torch.testing.assert_close(low.float(), rms_norm(x32), atol=0.02, rtol=0.01)
    (got,) = torch.autograd.grad(low, x32, g.bfloat16())
    assert got.dtype == torch.float32  # the residual stream's own dtype
    torch.testing.assert_close(got, want, atol=0.05, rtol=0.02)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a bfloat16 input stays bfloat16
        assert rms_norm_to(x32.detach().bfloat16(), RMS_EPS).dtype == torch.bfloat16


def test_the_model_with_its_fused_norms_or_apart_learns_the_same(monkeypatch):
    import toygpt_cli.model as model_module

    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16,
                      dropout=0.0, pos="rope", arch="modern")  # fmt: skip
    model = GPT(cfg).double()
    with torch.no_grad():  # the zero-initialised projections would let no gradient through
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    idx = torch.randint(0, 11, (3, 8))

    def loss_and_grads():
        model.zero_grad()
        _, loss = model(idx, idx)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    fused, fused_grads = loss_and_grads()
    monkeypatch.setattr(
        model_module, "norm_rotary", lambda x, c, s, eps: apply_rotary(rms_norm(x), c, s)
    )
    monkeypatch.setattr(model_module, "rms_norm_to", lambda x, eps: rms_norm(x))
    apart, apart_grads = loss_and_grads()
    torch.testing.assert_close(fused, apart)
    for a, b in zip(fused_grads, apart_grads, strict=True):
        torch.testing.assert_close(a, b)


def test_relu_squared_and_its_hand_written_gradient():
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.equal(relu_squared(x), torch.relu(x) ** 2)
    assert torch.autograd.gradcheck(relu_squared, (x,))


def test_the_fast_dropout_zeroes_about_p_scales_the_rest_and_routes_the_gradient():
    torch.manual_seed(0)
    layer = Dropout(0.25)
    x = torch.randn(400, 500, requires_grad=True)
    y = layer(x)
    kept = y != 0
    assert abs(1 - kept.float().mean().item() - 0.25) < 0.005
    assert torch.allclose(y[kept], x[kept] / 0.75)
    y.sum().backward()
    assert torch.equal(x.grad, kept.float() / 0.75)  # through the kept ones, scaled
    assert not torch.equal(kept, layer(x) != 0)  # a new mask each call
    layer.eval()
    assert layer(x) is x
    assert torch.equal(Dropout(1.0)(x), torch.zeros_like(x))
    bf16 = Dropout(0.1)(torch.ones(8, 8, dtype=torch.bfloat16))
    assert bf16.dtype == torch.bfloat16


def test_the_fast_dropout_mask_drops_p_in_every_lane_of_its_random_words():
    # Each 64-bit random number makes four neighbouring elements' choices: each of the four
    # must drop p of its elements, independently of the others.
    torch.manual_seed(0)
    keep, scale = keep_mask(torch.Size([1000, 1000]), 0.1, torch.device("cpu"))
    lanes = keep.view(-1, 4).float()
    dropped = 1 - lanes.mean(0)
    assert torch.all((dropped - 0.1).abs() < 0.0015), dropped
    both = (1 - lanes[:, 0]) * (1 - lanes[:, 1])  # two lanes of one word dropped together
    assert abs(both.mean().item() - 0.01) < 0.0008
    assert scale == pytest.approx(1 / (1 - round(0.1 * 65536) / 65536))
    odd, _ = keep_mask(torch.Size([3, 7]), 0.5, torch.device("cpu"))  # not a multiple of 4
    assert odd.shape == (3, 7) and odd.dtype == torch.bool
    assert keep_mask(torch.Size([5]), 1e-9, torch.device("cpu"))[0].all()  # p rounds to 0


@pytest.mark.slow
def test_the_dropout_mask_compiled_drops_p_and_scales_the_rest():
    # torch.compile (inductor, this machine's C++ compiler) turns the mask's int16 view of
    # random words into its own loops: it must still drop p and scale what it keeps.
    torch.manual_seed(0)
    layer = torch.compile(Dropout(0.1))
    out = layer(torch.ones(1000, 1000))
    dropped = (out == 0).float().mean().item()
    assert abs(dropped - 0.1) < 0.0015, dropped
    assert torch.all(out[out != 0] == 65536 / (65536 - round(0.1 * 65536)))
    lanes = (out == 0).view(-1, 4).float().mean(0)
    assert torch.all((lanes - 0.1).abs() < 0.003), lanes  # each of a word's four lanes


def test_the_modern_block_draws_its_dropout_fast_and_the_others_keep_torchs():
    torchs = torch.nn.Dropout
    for arch, kind in (("modern", Dropout), ("gpt2", torchs), ("nanogpt", torchs)):
        model = GPT(ModelConfig(vocab_size=8, block_size=8, n_layer=1, n_head=2, n_embd=16,
                                dropout=0.1, arch=arch))  # fmt: skip
        drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
        assert all(type(m) is kind for m in drops if m is not model.emb_drop), arch


@pytest.mark.parametrize("kw", [{"is_causal": True}, {}, {"attn_mask": "window"}])
def test_attention_in_bfloat16_on_a_cpu_runs_in_float32_and_returns_bfloat16(kw):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 16, 8) for _ in range(3))
    if "attn_mask" in kw:
        ones = torch.ones(16, 16, dtype=torch.bool)
        kw = {"attn_mask": ones.tril() & ~ones.tril(-4)}  # a sliding window of 4
    exact = F.scaled_dot_product_attention(q, k, v, **kw)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = attend(q.bfloat16(), k.bfloat16(), v.bfloat16(), **kw)
    assert got.dtype == torch.bfloat16
    # only the inputs' and the output's rounding: bf16 inside would add its own
    inside = F.scaled_dot_product_attention(q.bfloat16().float(), k.bfloat16().float(),
                                            v.bfloat16().float(), **kw).bfloat16()  # fmt: skip
    assert torch.equal(got, inside)
    assert torch.allclose(got.float(), exact, atol=0.05)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # evals, sampling
        q16, k16, v16 = q.bfloat16(), k.bfloat16(), v.bfloat16()
        plain = F.scaled_dot_product_attention(q16, k16, v16, **kw)
        assert torch.equal(attend(q16, k16, v16, **kw), plain)


def test_relu_squared_in_float16_saturates_instead_of_overflowing():
    x = torch.tensor([1.0, 255.0, 300.0, 1e4], dtype=torch.float16)
    y = relu_squared(x)
    assert torch.isfinite(y).all()  # 300^2 = 90,000 > 65,504, the largest float16
    assert y[0] == 1.0 and y[1] == 255.0**2 and y[2] == y[3] == torch.finfo(torch.float16).max


def test_logit_softcap_bounds_the_logits():
    model = _model(logit_softcap=2.0)
    with torch.no_grad():
        model.lm_head.weight.mul_(100)  # raw logits far beyond the cap
    logits = model(torch.randint(65, (2, 16)))[0]
    assert logits.abs().max() <= 2.0 and logits.abs().max() > 1.9


def test_logit_softcap_runs_in_float32_under_bfloat16():
    model = _model(logit_softcap=30.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(torch.randint(65, (2, 16)))[0]
    assert logits.dtype == torch.float32
    # tanh in float32 of the head's output: the same as capping its float32 cast by hand
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = torch.randint(65, (2, 16))
        model.config.logit_softcap = 0.0
        raw = model(x)[0]
        model.config.logit_softcap = 30.0
        capped = model(x)[0]
    assert torch.equal(capped, 30.0 * torch.tanh(raw.float() / 30.0))


def test_rope_needs_an_even_head_size():
    with pytest.raises(OptionError, match=r"even head size \(n_embd / n_head\), got 30/2 = 15"):
        ModelConfig(n_embd=30, n_head=2, pos="rope").validate()


def test_unknown_arch_is_refused():
    with pytest.raises(OptionError, match="arch must be one of gpt2, nanogpt, modern"):
        ModelConfig(arch="llama").validate()


@pytest.mark.parametrize("attn_dropout", [True, False])
def test_attention_dropout_can_be_left_out(attn_dropout):
    attn = _model(dropout=0.5, attn_dropout=attn_dropout).blocks[0].attn
    attn.resid_drop = torch.nn.Identity()  # leave only the dropout on the attention weights
    x = torch.randn(2, 16, 48)
    still = attn.eval()(x)
    torch.manual_seed(1)
    trained = attn.train()(x)
    assert torch.allclose(trained, still, atol=1e-6) == (not attn_dropout)


@pytest.mark.parametrize("emb_dropout", [True, False])
def test_embedding_dropout_is_an_option(emb_dropout):
    model = _model(dropout=0.5, emb_dropout=emb_dropout)
    assert model.emb_drop.p == (0.5 if emb_dropout else 0.0)
    idx = torch.randint(65, (2, 16))
    for block in model.blocks:  # leave only the embedding dropout
        block.attn.resid_drop = block.ffwd.drop = torch.nn.Identity()
        block.attn.dropout = 0.0
    still = model.eval()(idx)[0]
    torch.manual_seed(1)
    trained = model.train()(idx)[0]
    assert torch.allclose(trained, still, atol=1e-5) == (not emb_dropout)


@pytest.mark.parametrize("variant", ["gpt2", "rope", "all", "tricks"])
def test_the_attention_math_written_out_is_what_the_fused_call_computes(variant):
    attn = _model(**VARIANTS[variant]).blocks[0].attn
    x = torch.randn(2, 16, 48)
    rope = _model(**VARIANTS[variant]).rotary(0, 16) if "pos" in VARIANTS[variant] else None
    weights = attn.weights(x, rope)  # (B, nh, T, T)
    _, _, v = attn.project(x, rope)
    by_hand = (weights @ v).transpose(1, 2).reshape(2, 16, 48)
    torch.testing.assert_close(attn.proj(by_hand), attn(x, rope), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 6, 16))
    assert not weights.triu(1).any()  # nothing from later positions


@pytest.mark.parametrize("trick", TRICKS)
@pytest.mark.parametrize("arch", ["gpt2", "modern"])
def test_each_trick_starts_as_the_model_without_it(trick, arch):
    torch.manual_seed(0)
    cfg = dict(vocab_size=65, block_size=16, n_embd=48, n_layer=2, n_head=6, dropout=0.0,
               arch=arch, pos="rope")  # fmt: skip
    plain = GPT(ModelConfig(**cfg)).eval()
    torch.manual_seed(0)
    with_trick = GPT(ModelConfig(**cfg, **{trick: True}))
    for name, tensor in plain.state_dict().items():  # it drew no random number of theirs
        assert torch.equal(tensor, with_trick.state_dict()[name]), name
    with torch.no_grad():  # give the shared weights values (modern starts with zeros)
        for p in plain.parameters():
            p.normal_(0.0, 0.2)
    missing, unexpected = with_trick.load_state_dict(plain.state_dict(), strict=False)
    assert missing and not unexpected  # the trick's own weights, at their initial values
    idx = torch.randint(65, (2, 16))
    torch.testing.assert_close(with_trick.eval()(idx)[0], plain(idx)[0])
    assert GPT(ModelConfig(**cfg, **{trick: True})).num_params() > plain.num_params()


def test_the_pair_embedding_brings_the_previous_character_and_only_it():
    # Without attention, positions cannot mix inside the blocks: the logits at position t
    # change with the character at t - 1 only through the pair embedding.
    model = _model(arch="modern", pos="rope", bigram=True)
    with torch.no_grad():
        for block in model.blocks:  # no attention: positions cannot mix inside the blocks
            block.attn.proj.weight.zero_()
    idx = torch.randint(65, (2, 8))
    changed = idx.clone()
    changed[:, 3] = (changed[:, 3] + 1) % 65
    a, b = model(idx)[0], model(changed)[0]
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert not torch.allclose(a[:, 4], b[:, 4])  # the next position sees the change
    torch.testing.assert_close(a[:, 5:], b[:, 5:])  # and only the next one


def test_the_bigram_table_is_exact_for_small_vocabularies_and_hashed_for_large_ones():
    from toygpt_cli.config import BIGRAM_MAX_ROWS, bigram_rows
    from toygpt_cli.model import bigram_index

    assert bigram_rows(65) == 66 * 66
    prev = torch.arange(-1, 65).repeat_interleave(65)  # every (previous or none, current)
    rows = bigram_index(prev, torch.arange(65).repeat(66))
    assert len(set(rows.tolist())) == 66 * 65 and int(rows.max()) < bigram_rows(65)
    # A pair's row does not depend on the vocabulary: those of 65 characters are below 66^2
    # and keep their rows in any larger vocabulary (the index does not even take its size).
    big = _model(vocab_size=300, bigram=True)
    assert big.bigram_emb.num_embeddings == bigram_rows(300) == BIGRAM_MAX_ROWS
    logits, _ = big(torch.full((1, 16), 299))  # the largest pair index wraps into the table
    assert torch.isfinite(logits).all()


def test_attention_scale_sharpens_the_attention():
    x = torch.randn(1, 16, 48)
    soft = _model(arch="modern").blocks[0].attn.weights(x)
    sharp = _model(arch="modern", attn_scale=1.0).blocks[0].attn.weights(x)
    assert sharp.max(-1).values.mean() > soft.max(-1).values.mean()


def test_muon_takes_the_block_matrices_and_never_the_added_embeddings():
    from toygpt_cli.optim import muon_params, param_groups

    model = _model(**VARIANTS["tricks"])
    taken = {id(p) for p in muon_params(model)[0]}
    names = {n for n, p in model.named_parameters() if id(p) in taken}
    assert names and all(n.startswith("blocks.") for n in names)
    adamw = {id(p) for g in param_groups(model, muon=True) for p in g["params"]}
    assert adamw | taken == {id(p) for p in model.parameters()} and not adamw & taken
