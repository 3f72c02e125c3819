"""evaluate.py: the windowed loss, the fixed windows of periodic evals, whole-split scoring
from one or several window alignments, and evenly spread subsets."""

import math

import pytest
import torch
import torch.nn.functional as F

from toygpt_cli.evaluate import (
    LossSum,
    fixed_windows,
    loss_report,
    scored_chars,
    split_loss,
    subset_windows,
    window_losses,
)
from toygpt_cli.model import GPT, ModelConfig


def _model():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=20, block_size=8, n_embd=16, n_layer=1, n_head=2, dropout=0.0)
    return GPT(cfg)


def _reference(model, data, starts, length):
    window = data[starts[:, None] + torch.arange(length + 1)].long()
    logits = model(window[:, :-1])[0]
    return F.cross_entropy(logits.reshape(-1, 20), window[:, 1:].reshape(-1), reduction="sum")


def test_window_losses_sum_the_windows_and_leave_the_model_as_it_was():
    model, data = _model(), torch.randint(20, (500,), dtype=torch.uint8)
    starts = torch.tensor([0, 7, 100])
    model.train()
    total, count = window_losses(model, data, starts, 8, "float32")
    assert model.training and count == 24
    torch.testing.assert_close(total, _reference(model.eval(), data, starts, 8))


def test_loss_sum_adds_up_once_in_double_precision():
    total = LossSum()
    for _ in range(1000):
        total.add(torch.tensor(0.1, dtype=torch.float32), 1)
    assert total.count == 1000 and total.mean() == pytest.approx(0.1, rel=1e-7)
    assert LossSum().mean() == 0.0


def test_fixed_windows_are_a_prefix_of_one_sequence():
    many = fixed_windows(10_000, 6_400, 16, seed=5)
    assert torch.equal(fixed_windows(10_000, 64, 16, seed=5), many[:64])
    assert torch.equal(fixed_windows(10_000, 2_000, 16, seed=5), many[:2_000])
    assert int(many.max()) < 10_000 - 16 and not torch.equal(fixed_windows(10_000, 64, 16, 6),
                                                             many[:64])  # fmt: skip


def test_subset_windows_are_spread_and_disjoint():
    starts = subset_windows(10_000, 16, 1_000)
    assert len(starts) == 1_000 // 16 and starts[0] == 0 and starts[-1] == 10_000 - 1 - 16
    assert bool((starts[1:] - starts[:-1] >= 16).all())  # no position scored twice
    assert torch.equal(starts, subset_windows(10_000, 16, 1_000))  # deterministic
    assert subset_windows(10_000, 16, None) is None
    assert subset_windows(10_000, 16, 10_000) is None  # the whole split fits: all of it
    assert scored_chars(10_000, 16, 1_000) == 992 and scored_chars(10_000, 16) == 9_999
    assert len(subset_windows(10_000, 16, 5)) == 1  # at least one window


def test_split_loss_subset_and_progress():
    model = _model()
    data = torch.randint(20, (2_000,), dtype=torch.uint8)
    seen = []
    whole = split_loss(model, data, 8, "float32", progress=lambda *p: seen.append(p))
    assert seen[-1] == (1_999, 1_999) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert whole == pytest.approx(split_loss(model, data.long(), 8, "float32"))
    assert split_loss(model, data, 8, "float32", max_chars=5_000) == pytest.approx(whole)
    seen.clear()
    part = split_loss(model, data, 8, "float32", max_chars=400, progress=lambda *p: seen.append(p))
    assert seen[-1] == (400, 400) and part != whole
    starts = subset_windows(2_000, 8, 400)
    assert part == pytest.approx(_reference(model, data, starts, 8).item() / 400, rel=1e-5)


def test_whole_split_scores_every_position_once_per_alignment():
    model = _model().eval()
    data = torch.randint(20, (1_003,), dtype=torch.uint8)
    seen = []
    mean = split_loss(model, data, 8, "float32", offsets=4, progress=lambda *p: seen.append(p))
    assert seen[-1] == (4 * 1_002, 4 * 1_002)  # each alignment scores all 1,002 positions
    by_hand = []
    for shift in (0, 2, 4, 6):
        full = (1_002 - shift) // 8
        total = _reference(model, data, shift + torch.arange(full) * 8, 8)
        if shift:
            total = total + _reference(model, data, torch.tensor([0]), shift)
        rest = 1_002 - shift - full * 8
        if rest:
            total = total + _reference(model, data, torch.tensor([shift + full * 8]), rest)
        by_hand.append(total.item() / 1_002)
    assert mean == pytest.approx(sum(by_hand) / 4, rel=1e-5)
    assert split_loss(model, data, 8, "float32", offsets=1) == pytest.approx(by_hand[0], rel=1e-5)
    assert mean != pytest.approx(by_hand[0], rel=1e-6)  # the alignment moves the figure


def test_loss_report():
    r = loss_report(math.log(4))
    assert r["bits_per_char"] == pytest.approx(2.0) and r["perplexity"] == pytest.approx(4.0)
