import torch

from toygpt_cli.config import ModelConfig
from toygpt_cli.data import CharTokenizer
from toygpt_cli.model import GPT
from toygpt_cli.sample import generate, sample_text


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
