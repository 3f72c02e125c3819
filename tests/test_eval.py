"""`toygpt eval`: subsets, progress, eval.json merging; eval, sample and data info of an
existing corpus never read the whole text again."""

import json

import pytest
import torch

from toygpt_cli.cli import meter
from toygpt_cli.corpus import encoding
from toygpt_cli.evaluate import scored_chars, split_loss, subset_windows
from toygpt_cli.model import GPT, ModelConfig

from .cli_helpers import toygpt
from .conftest import TINY_ARGS


@pytest.fixture
def trained(dirs, corpus_file):
    _, runs = dirs
    r = toygpt("train", "--data", corpus_file, *TINY_ARGS, "--iters", "4", "--eval-interval", "4")
    assert r.exit_code == 0, r.stderr
    (run,) = runs.iterdir()
    return run


def _no_rereading(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("read the whole text again")

    monkeypatch.setattr(encoding, "scan", fail)
    monkeypatch.setattr(encoding, "encode", fail)


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
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=20, block_size=8, n_embd=16, n_layer=1, n_head=2, dropout=0.0)
    model = GPT(cfg)
    data = torch.randint(20, (2_000,), dtype=torch.uint8)
    seen = []
    whole = split_loss(model, data, 8, "float32", progress=lambda *p: seen.append(p))
    assert seen[-1] == (1_999, 1_999) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert whole == pytest.approx(split_loss(model, data.long(), 8, "float32"))
    assert split_loss(model, data, 8, "float32", max_chars=5_000) == pytest.approx(whole)
    seen.clear()
    part = split_loss(model, data, 8, "float32", max_chars=400, progress=lambda *p: seen.append(p))
    assert seen[-1] == (400, 400) and part != whole
    windows = data[subset_windows(2_000, 8, 400)[:, None] + torch.arange(9)].long()
    assert part == pytest.approx(model(windows[:, :-1], windows[:, 1:])[1].item(), rel=1e-5)


def test_eval_one_split_keeps_the_other(trained, monkeypatch):
    _no_rereading(monkeypatch)  # the corpus was encoded by train: eval maps it
    r = toygpt("eval", "--split", "train", "--json")
    assert r.exit_code == 0, r.stderr
    train = json.loads(r.stdout)["splits"]["train"]
    r = toygpt("eval", "--split", "val")
    assert r.exit_code == 0, r.stderr
    assert "kept the train result" in r.stderr
    saved = json.loads((trained / "eval.json").read_text())
    assert saved["splits"]["train"] == train and "val" in saved["splits"]
    assert "train" not in r.stdout.split("perplexity")[1]  # the table shows what was scored


def test_eval_of_other_weights_drops_older_results(trained):
    assert toygpt("eval", "--split", "train").exit_code == 0
    path = trained / "eval.json"
    earlier = json.loads(path.read_text())
    path.write_text(json.dumps({**earlier, "step": earlier["step"] - 1}))
    r = toygpt("eval", "--split", "val")
    assert r.exit_code == 0 and "kept" not in r.stderr
    assert list(json.loads(path.read_text())["splits"]) == ["val"]


def test_eval_max_chars_scores_a_subset(trained, monkeypatch):
    monkeypatch.setattr(meter, "PLAIN_EVERY", 0.0)  # a plain progress line for every chunk
    r = toygpt("eval", "--max-chars", "500")
    assert r.exit_code == 0, r.stderr
    assert "eval train:" in r.stderr and "eval val:" in r.stderr and "(100%)" in r.stderr
    assert "496 of 27,000" in r.stdout  # 31 windows of 16 characters
    val = json.loads((trained / "eval.json").read_text())["splits"]["val"]
    assert val["scored_chars"] == 496 and val["max_chars"] == 500 and val["chars"] == 3_000
    whole = json.loads(toygpt("eval", "--json").stdout)["splits"]["val"]
    assert whole["scored_chars"] == 2_999 and whole["max_chars"] is None
    assert toygpt("eval", "--max-chars", "0").exit_code == 2


def test_eval_warns_when_the_text_changed(trained, corpus_file):
    corpus_file.write_text(corpus_file.read_text()[::-1])
    r = toygpt("eval", "--split", "val")
    assert r.exit_code == 0, r.stderr
    assert "has changed since" in r.stderr


def test_sample_does_not_need_the_corpus(trained, corpus_file):
    corpus_file.unlink()
    r = toygpt("sample", "-n", "20", "--seed", "1")
    assert r.exit_code == 0, r.stderr
    assert len(r.stdout) >= 20


def test_data_info_reads_cached_facts(corpus_file, tiny_text, monkeypatch):
    first = json.loads(toygpt("data", "info", corpus_file, "--json").stdout)
    _no_rereading(monkeypatch)
    r = toygpt("data", "info", corpus_file, "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout) == first
    assert first["chars"] == len(tiny_text) and first["vocab"] == "".join(sorted(set(tiny_text)))
    assert first["train_chars"] == int(len(tiny_text) * 0.9)


def test_data_info_on_a_large_vocabulary(tmp_path):
    path = tmp_path / "cjk.txt"
    text = "".join(chr(c) for c in range(0x4E00, 0x4E00 + 1000)) + "\n"
    path.write_text(text, encoding="utf-8")
    r = toygpt("data", "info", path)
    assert r.exit_code == 0, r.stderr
    assert "1,001" in r.stdout and "..." in r.stdout  # the vocabulary is cut in the table
    assert json.loads(toygpt("data", "info", path, "--json").stdout)["vocab"] == "\n" + text[:-1]
