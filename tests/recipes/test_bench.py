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
