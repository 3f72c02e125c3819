import pytest
import torch

from toygpt_cli.config import ModelConfig
from toygpt_cli.data import CharTokenizer
from toygpt_cli.errors import UsageError
from toygpt_cli.model import GPT
from toygpt_cli.sample import MIN_TEMPERATURE, _pick, generate, sample_text, stream_samples


def _model(block_size=16):
    torch.manual_seed(3)
    return GPT(
        ModelConfig(
            vocab_size=20, block_size=block_size, n_embd=32, n_layer=2, n_head=4, dropout=0.0
        )
    ).eval()


def test_cached_and_uncached_generation_give_identical_text():
    model = _model()
    start = torch.zeros(3, 1, dtype=torch.long)
    for top_k in (None, 5):
        a = generate(model, start, 60, top_k=top_k, generator=torch.Generator().manual_seed(1))
        b = generate(
            model,
            start,
            60,
            top_k=top_k,
            generator=torch.Generator().manual_seed(1),
            use_cache=False,
        )
        assert torch.equal(a, b)  # 60 > block_size: covers the cache and the sliding window
        assert a.shape == (3, 61)


def _rope_model(n_layer, arch="gpt2"):
    torch.manual_seed(3)
    cfg = ModelConfig(vocab_size=20, block_size=16, n_embd=32, n_layer=n_layer, n_head=4,
                      dropout=0.0, pos="rope", arch=arch)  # fmt: skip
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
    for top_k in (None, 5):
        kw = dict(top_k=top_k)
        a = generate(model, start, 80, generator=torch.Generator().manual_seed(1), **kw)
        b = generate(
            model, start, 80, generator=torch.Generator().manual_seed(1), use_cache=False, **kw
        )
        assert torch.equal(a, b)  # 80 > block_size: the cache rolled 64 times


@pytest.mark.parametrize("arch", ["gpt2", "modern"])
def test_rolling_cache_gives_the_text_of_sliding_window_attention(arch):
    # With more layers each cached position keeps the context it was computed in: the text
    # is that of the model reading the whole text with a sliding attention window, which a
    # full forward over everything generated so far computes the straightforward way.
    model = _rope_model(n_layer=3, arch=arch)
    start = torch.zeros(2, 1, dtype=torch.long)
    for top_k in (None, 5):
        out = generate(model, start, 60, top_k=top_k, generator=torch.Generator().manual_seed(1))
        gen, idx = torch.Generator().manual_seed(1), start
        for _ in range(60):
            logits, _, _ = model(idx)  # the whole text: longer than block_size
            nxt = _pick(logits[:, -1], 1.0, top_k, gen)
            idx = torch.cat((idx, nxt), dim=1)
        assert torch.equal(out, idx)
        windowed = generate(
            model, start, 60, top_k=top_k, generator=torch.Generator().manual_seed(1),
            use_cache=False,
        )  # fmt: skip
        assert torch.equal(windowed[:, :17], out[:, :17])  # the same until the window slides


def test_same_seed_same_text_and_prompt_is_kept():
    model, tok = _model(), CharTokenizer("abcdefghijklmnopqrst")
    a = sample_text(model, tok, prompt="abc", max_new_tokens=30, seed=7, num_samples=2)
    b = sample_text(model, tok, prompt="abc", max_new_tokens=30, seed=7, num_samples=2)
    c = sample_text(model, tok, prompt="abc", max_new_tokens=30, seed=8, num_samples=2)
    assert a == b and a != c
    assert all(t.startswith("abc") and len(t) == 33 for t in a)
    assert a[0] != a[1]  # a batch of samples are independent draws


def test_top_k_larger_than_vocab_is_clamped():
    model, tok = _model(), CharTokenizer("abcdefghijklmnopqrst")
    assert len(sample_text(model, tok, max_new_tokens=10, top_k=1000, seed=1)[0]) == 10


def test_top_k_one_is_greedy():
    model = _model()
    start = torch.zeros(1, 1, dtype=torch.long)
    out = generate(model, start, 10, top_k=1, generator=torch.Generator().manual_seed(0))
    idx = start
    for _ in range(10):
        logits, _, _ = model(idx[:, -16:])
        idx = torch.cat((idx, logits[:, -1].argmax(-1, keepdim=True)), dim=1)
    assert torch.equal(out, idx)


def _greedy(model, start, steps):
    idx = start
    for _ in range(steps):
        logits, _, _ = model(idx[:, -16:])
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
    model, tok = _model(), CharTokenizer("abcdefghijklmnopqrst")
    kw = dict(prompt="ab", max_new_tokens=25, num_samples=3, seed=4)
    steps = list(stream_samples(model, tok, **kw))
    assert len(steps) == 25 and all(len(s) == 3 for s in steps)
    streamed = ["ab" + "".join(s[i] for s in steps) for i in range(3)]
    assert streamed == sample_text(model, tok, **kw)


def test_generation_keeps_only_a_window_of_context():
    # A prompt far longer than block_size works, and the text does not depend on what
    # lies outside the window.
    model, tok = _model(), CharTokenizer("abcdefghijklmnopqrst")
    tail = "abcdefghijklmnop"  # 16 = block_size
    a = sample_text(model, tok, prompt="t" * 5000 + tail, max_new_tokens=20, seed=2)[0]
    b = sample_text(model, tok, prompt="s" * 10 + tail, max_new_tokens=20, seed=2)[0]
    assert a[-20:] == b[-20:]


@pytest.mark.parametrize(
    ("temperature", "top_k", "message"),
    [
        (-1.0, None, "must be 0 \\(greedy\\) or a positive number"),
        (float("nan"), None, "must be 0 \\(greedy\\) or a positive number"),
        (float("inf"), None, "must be 0 \\(greedy\\) or a positive number"),
        (1e-39, None, "too small to sample with; use 0 for greedy"),
        (1.0, 0, "--top-k must be at least 1"),
    ],
)
def test_bad_sampling_settings_are_usage_errors(temperature, top_k, message):
    model, tok = _model(), CharTokenizer("abcdefghijklmnopqrst")
    with pytest.raises(UsageError, match=message):
        sample_text(model, tok, max_new_tokens=5, temperature=temperature, top_k=top_k)


def test_tiny_but_allowed_temperature_gives_real_characters():
    model, tok = _model(), CharTokenizer("abcdefghijklmnopqrst")
    text = sample_text(model, tok, max_new_tokens=20, temperature=MIN_TEMPERATURE, seed=1)[0]
    assert len(text) == 20 and set(text) <= set(tok.chars)
