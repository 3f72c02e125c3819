"""`toygpt bench`'s measurements run and report what they claim (no timing assertions)."""

from dataclasses import replace

import torch

from toygpt_cli.config import ModelConfig, TrainConfig
from toygpt_cli.recipes.bench import bench_recipe, run_benchmarks

TINY = ModelConfig(block_size=16, n_embd=32, n_layer=2, n_head=4, dropout=0.0)
CPU = torch.device("cpu")


def test_benchmarks_run_at_a_given_size():
    result = run_benchmarks("cpu", "float32", 0.05, TINY, TrainConfig(batch_size=4), recipes=())
    assert result["train_tokens_per_sec"] > 0 and result["sample_chars_per_sec"] > 0
    assert [r["name"] for r in result["rows"]][:2] == ["train step", "train tokens/s"]
    assert result["recipes"] == []


def test_recipes_compare_the_rolling_cache_with_recomputing_the_window():
    rope = replace(TINY, pos="rope", arch="modern")
    r = bench_recipe("rope", rope, TrainConfig(batch_size=4, optimizer="muon"), CPU, "float32",
                     0.05, sample_block=32)  # fmt: skip
    assert r["shape"] == "2x32, rope, modern, muon" and r["batch"] == "4 x 16"
    assert r["sample_rolling_chars_per_sec"] > 0 and r["rolling_speedup"] > 0
    learned = bench_recipe("seed", TINY, TrainConfig(batch_size=4), CPU, "float32", 0.05,
                           sample_block=32)  # fmt: skip
    assert learned["sample_window_chars_per_sec"] > 0
    assert learned["sample_rolling_chars_per_sec"] is None  # learned positions: no rolling


def test_a_recipes_ceiling_counts_every_product_of_its_step(monkeypatch):
    """Forward, input-gradient and weight-gradient products of the four block linears and
    the head, at the step's rows: with each call taking one second, GFLOP/s is their sum."""
    from toygpt_cli.recipes import bench

    calls = []

    def one_second(fn, seconds, min_reps=3):
        fn()
        calls.append(fn)
        return 1.0

    monkeypatch.setattr(bench, "_timed", one_second)
    cfg = replace(TINY, vocab_size=65)
    n, c = 64, cfg.n_embd
    expected = 3 * 2 * n * c * (3 * c + c + 4 * c + 4 * c + 65)
    assert bench.recipe_ceiling(cfg, n, CPU, "float32", trials=3) * 1e9 == expected
    assert len(calls) == 3  # the best of three trials


def test_recipes_report_their_share_of_the_ceiling():
    r = bench_recipe("seed", TINY, TrainConfig(batch_size=4), CPU, "float32", 0.05,
                     sample_block=32)  # fmt: skip
    assert r["train_gflops"] > 0 and r["ceiling_gflops"] > 0
    assert r["ceiling_fraction"] == r["train_gflops"] / r["ceiling_gflops"]
