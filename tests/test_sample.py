"""sample.py: the key/value cache in generation, drawing each character (temperature,
top-k, top-p, min-p), and streaming."""

import dataclasses

import pytest
import torch

from toygpt_cli.config import MIN_TEMPERATURE, ModelConfig, SampleConfig
from toygpt_cli.data import CharTokenizer
from toygpt_cli.errors import ToygptError, UsageError
from toygpt_cli.model import GPT
from toygpt_cli.sample import (
    effective_top_k,
    generate,
    pick,
    sample_text,
    stream_samples,
)

VOCAB = "abcdefghijklmnopqrst"


def _model(block_size=16, pos="learned", **tricks):
    torch.manual_seed(3)
    model = GPT(
        ModelConfig(
            vocab_size=20, block_size=block_size, n_embd=32, n_layer=2, n_head=4, dropout=0.0,
            pos=pos, **tricks,
        )
    ).eval()  # fmt: skip
    if tricks:  # the added weights start at zero: give them values
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.3)
    return model


TRICKS = {"bigram": True, "x0_skip": True, "attn_scale": 0.3}


@pytest.mark.parametrize("tricks", [{}, TRICKS], ids=["plain", "tricks"])
def test_cached_and_uncached_generation_give_identical_text(tricks):
    model = _model(**tricks)
    start = torch.zeros(3, 1, dtype=torch.long)
    for top_k in (0, 5):
        a = generate(model, start, 60, top_k=top_k, generator=torch.Generator().manual_seed(1))
        b = generate(
            model, start, 60, top_k=top_k, generator=torch.Generator().manual_seed(1),
            use_cache=False,
        )  # fmt: skip
        assert torch.equal(a, b)  # 60 > block_size: covers the cache and the sliding window
        assert a.shape == (3, 61)


def _rope_model(n_layer, arch="gpt2", **tricks):
    torch.manual_seed(3)
    cfg = ModelConfig(vocab_size=20, block_size=16, n_embd=32, n_layer=n_layer, n_head=4,
                      dropout=0.0, pos="rope", arch=arch, **tricks)  # fmt: skip
    model = GPT(cfg).eval()
    with torch.no_grad():  # the modern block starts with zero projections: give them values
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model


def test_rolling_cache_with_one_layer_gives_the_text_of_recomputing_the_window():
    # With one layer, a cached key depends only on its character and position, so the
    # rolling cache computes what the straightforward method (recompute the window) does.
    model = _rope_model(n_layer=1)
    start = torch.zeros(3, 1, dtype=torch.long)
    for top_k in (0, 5):
        kw = dict(top_k=top_k)
        a = generate(model, start, 80, generator=torch.Generator().manual_seed(1), **kw)
        b = generate(
            model, start, 80, generator=torch.Generator().manual_seed(1), use_cache=False, **kw
        )
        assert torch.equal(a, b)  # 80 > block_size: the cache rolled 64 times


@pytest.mark.parametrize("arch", ["gpt2", "modern", "tricks"])
def test_rolling_cache_gives_the_text_of_sliding_window_attention(arch):
    # With more layers each cached position keeps the context it was computed in: the text
    # is that of the model reading the whole text with a sliding attention window, which a
    # full forward over everything generated so far computes the straightforward way.
    tricks = TRICKS if arch == "tricks" else {}
    model = _rope_model(n_layer=3, arch="modern" if tricks else arch, **tricks)
    start = torch.zeros(2, 1, dtype=torch.long)
    for top_k in (0, 5):
        out = generate(model, start, 60, top_k=top_k, generator=torch.Generator().manual_seed(1))
        gen, idx = torch.Generator().manual_seed(1), start
        for _ in range(60):
            logits = model(idx)[0]  # the whole text: longer than block_size
            nxt = pick(logits[:, -1], 1.0, top_k, generator=gen)
            idx = torch.cat((idx, nxt), dim=1)
        assert torch.equal(out, idx)
        windowed = generate(
            model, start, 60, top_k=top_k, generator=torch.Generator().manual_seed(1),
            use_cache=False,
        )  # fmt: skip
        assert torch.equal(windowed[:, :17], out[:, :17])  # the same until the window slides


def test_same_seed_same_text_and_prompt_is_kept():
    model, tok = _model(), CharTokenizer(VOCAB)
    a = sample_text(model, tok, prompt="abc", max_new_tokens=30, seed=7, num_samples=2)
    b = sample_text(model, tok, prompt="abc", max_new_tokens=30, seed=7, num_samples=2)
    c = sample_text(model, tok, prompt="abc", max_new_tokens=30, seed=8, num_samples=2)
    assert a == b and a != c
    assert all(t.startswith("abc") and len(t) == 33 for t in a)
    assert a[0] != a[1]  # a batch of samples are independent draws


def test_top_k_at_or_above_the_vocabulary_changes_nothing_and_says_so():
    model, tok = _model(), CharTokenizer(VOCAB)
    a = sample_text(model, tok, max_new_tokens=30, top_k=1000, seed=1)
    assert a == sample_text(model, tok, max_new_tokens=30, top_k=0, seed=1)
    assert "has no effect" in effective_top_k(20, 20) and effective_top_k(19, 20) is None


def test_top_k_one_is_greedy():
    model = _model()
    start = torch.zeros(1, 1, dtype=torch.long)
    out = generate(model, start, 10, top_k=1, generator=torch.Generator().manual_seed(0))
    idx = start
    for _ in range(10):
        logits = model(idx[:, -16:])[0]
        idx = torch.cat((idx, logits[:, -1].argmax(-1, keepdim=True)), dim=1)
    assert torch.equal(out, idx)


def _greedy(model, start, steps):
    idx = start
    for _ in range(steps):
        logits = model(idx[:, -16:])[0]
        idx = torch.cat((idx, logits[:, -1].argmax(-1, keepdim=True)), dim=1)
    return idx


def test_temperature_zero_is_greedy_and_ignores_the_seed():
    model = _model()
    start = torch.zeros(1, 1, dtype=torch.long)
    for seed in (0, 1):
        out = generate(
            model, start, 30, temperature=0, generator=torch.Generator().manual_seed(seed)
        )
        assert torch.equal(out, _greedy(model, start, 30))  # 30 > block_size: sliding window too


def test_streamed_characters_are_the_sampled_text():
    model, tok = _model(), CharTokenizer(VOCAB)
    kw = dict(prompt="ab", max_new_tokens=25, num_samples=3, seed=4)
    steps = list(stream_samples(model, tok, **kw))
    assert len(steps) == 25 and all(len(s) == 3 for s in steps)
    streamed = ["ab" + "".join(s[i] for s in steps) for i in range(3)]
    assert streamed == sample_text(model, tok, **kw)


def test_generation_keeps_only_a_window_of_context():
    # A prompt far longer than block_size works, and the text does not depend on what
    # lies outside the window.
    model, tok = _model(), CharTokenizer(VOCAB)
    tail = "abcdefghijklmnop"  # 16 = block_size
    a = sample_text(model, tok, prompt="t" * 5000 + tail, max_new_tokens=20, seed=2)[0]
    b = sample_text(model, tok, prompt="s" * 10 + tail, max_new_tokens=20, seed=2)[0]
    assert a[-20:] == b[-20:]


def test_a_rope_prompt_longer_than_the_block_is_read_whole():
    # With rotary positions the whole prompt is read (a block at a time) before the cache
    # rolls: the text is that of the model reading everything, so characters beyond the
    # last block still matter (they reach it through the layers' hidden states).
    model = _model(pos="rope")
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    tok = CharTokenizer(VOCAB)
    prompt = "t" * 40 + "abcdefghijklmnop"
    a = sample_text(model, tok, prompt=prompt, max_new_tokens=20, seed=2)[0]
    far = model(torch.tensor([tok.encode(prompt)]))[0][:, -1]
    near = model(torch.tensor([tok.encode(prompt[-16:])]))[0][:, -1]
    assert not torch.allclose(far, near)  # the text beyond the last block still counts
    idx = torch.tensor([tok.encode(prompt)])
    gen, out = torch.Generator().manual_seed(2), idx
    for _ in range(20):  # the straightforward way: a full forward over everything so far
        out = torch.cat((out, pick(model(out)[0][:, -1], generator=gen)), dim=1)
    assert a == tok.decode(out[0].tolist())


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"temperature": -1.0}, "temperature must be 0 or more"),
        ({"temperature": float("nan")}, "temperature must be a finite number"),
        ({"temperature": float("inf")}, "temperature must be a finite number"),
        ({"temperature": 1e-39}, "too small to sample with; use 0 for greedy"),
        ({"top_k": -1}, "top_k must be 0 or more"),
        ({"top_p": 0.0}, "top_p must be greater than 0"),
        ({"top_p": 1.5}, "top_p must be at most 1"),
        ({"min_p": -0.1}, "min_p must be 0 or more"),
        ({"min_p": 2.0}, "min_p must be at most 1"),
        ({"num_samples": 0}, "num_samples must be greater than 0"),
        ({"max_new_tokens": 20_000_000}, "max_new_tokens must be at most"),
        ({"max_new_tokens": 5_000, "num_samples": 5_000}, "at most 10,000,000 are drawn"),
    ],
)
def test_bad_sampling_settings_are_usage_errors(settings, message):
    model, tok = _model(), CharTokenizer(VOCAB)
    with pytest.raises(UsageError, match=message):
        sample_text(model, tok, **{"max_new_tokens": 5, **settings})


def test_tiny_but_allowed_temperature_gives_real_characters():
    model, tok = _model(), CharTokenizer(VOCAB)
    text = sample_text(model, tok, max_new_tokens=20, temperature=MIN_TEMPERATURE, seed=1)[0]
    assert len(text) == 20 and set(text) <= set(tok.chars)


def _draws(logits, n=1500, **kw):
    gen = torch.Generator().manual_seed(0)
    return torch.cat([pick(logits, generator=gen, **kw) for _ in range(n // len(logits))])


def test_top_p_keeps_the_smallest_set_that_reaches_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    assert set(_draws(logits, top_p=0.5).flatten().tolist()) == {0}
    assert set(_draws(logits, top_p=0.79).flatten().tolist()) == {0, 1}
    assert set(_draws(logits, top_p=0.81).flatten().tolist()) == {0, 1, 2}
    assert set(_draws(logits, top_p=1e-9).flatten().tolist()) == {0}  # always one left


def test_min_p_drops_the_unlikely_relative_to_the_likeliest():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    assert set(_draws(logits, min_p=0.5).flatten().tolist()) == {0, 1}
    assert set(_draws(logits, min_p=0.2).flatten().tolist()) == {0, 1, 2}
    assert set(_draws(logits, min_p=1.0).flatten().tolist()) == {0}


def test_the_filters_apply_after_temperature_and_top_k_in_that_order():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0]])
    # top_k 3 leaves 0..2; top_p 0.9 of what is left; with temperature 0.5 the likeliest
    # dominates more, so fewer survive the same p
    wide = set(_draws(logits, top_k=3, top_p=0.97).flatten().tolist())
    sharp = set(_draws(logits, temperature=0.5, top_k=3, top_p=0.97).flatten().tolist())
    assert wide == {0, 1, 2} and sharp == {0, 1}


def test_top_p_one_and_min_p_zero_leave_the_text_unchanged():
    model, tok = _model(), CharTokenizer(VOCAB)
    plain = sample_text(model, tok, prompt="ab", max_new_tokens=60, seed=9, num_samples=2)
    same = sample_text(model, tok, prompt="ab", max_new_tokens=60, seed=9, num_samples=2,
                       top_p=1.0, min_p=0.0)  # fmt: skip
    assert plain == same
    other = sample_text(model, tok, prompt="ab", max_new_tokens=60, seed=9, num_samples=2,
                        top_p=0.5)  # fmt: skip
    assert other != plain


def test_a_model_with_nan_weights_is_one_line_not_a_crash():
    model, tok = _model(), CharTokenizer(VOCAB)
    with torch.no_grad():
        model.lm_head.weight.fill_(float("nan"))
    with pytest.raises(ToygptError, match="not a number"):
        sample_text(model, tok, max_new_tokens=5, seed=1)


def test_a_sample_config_gives_the_same_text_as_keywords():
    model, tok = _model(), CharTokenizer(VOCAB)
    cfg = SampleConfig(max_new_tokens=30, temperature=0.8, top_k=5, seed=3)
    assert sample_text(model, tok, config=cfg) == sample_text(
        model, tok, max_new_tokens=30, temperature=0.8, top_k=5, seed=3
    )
    assert dataclasses.asdict(cfg)["top_p"] == 1.0
