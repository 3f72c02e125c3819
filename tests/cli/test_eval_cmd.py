"""`toygpt eval`: subsets, window offsets, progress, eval.json merging; eval and sample of
an existing corpus never read the whole text again."""

import json

import pytest

from toygpt_cli.cli import meter
from toygpt_cli.corpus import encoding

from ..cli_helpers import toygpt
from ..conftest import TINY_ARGS


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


def test_a_sample_never_replaces_a_whole_split_score_of_the_same_weights(trained):
    assert toygpt("eval", "--split", "val").exit_code == 0
    whole = json.loads((trained / "eval.json").read_text())["splits"]["val"]
    r = toygpt("eval", "--split", "val", "--max-chars", "500", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["splits"]["val"]["max_chars"] == 500  # shown: the sample
    assert "keeps the whole val score from before" in r.stderr
    saved = json.loads((trained / "eval.json").read_text())
    assert saved["splits"]["val"] == whole and "whole_kept" not in saved


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


def test_eval_table(dirs, corpus_file):
    toygpt("train", "--data", corpus_file, *TINY_ARGS, "--iters", "10")
    r = toygpt("eval", "--split", "val")
    assert r.exit_code == 0, r.stderr
    assert "val" in r.stdout and "bits/char" in r.stdout and "perplexity" in r.stdout


def test_eval_offsets_average_several_alignments(trained):
    one = json.loads(toygpt("eval", "--split", "val", "--json").stdout)["splits"]["val"]
    four = json.loads(toygpt("eval", "--split", "val", "--offsets", "4", "--json").stdout)
    four = four["splits"]["val"]
    assert four["offsets"] == 4 and one["offsets"] == 1
    assert four["loss"] != one["loss"] and abs(four["loss"] - one["loss"]) < 0.2
    r = toygpt("eval", "--split", "val", "--offsets", "4")
    assert "4 window offsets" in r.stdout


def test_eval_on_a_read_only_run_prints_its_table_and_says_it_could_not_save(trained, monkeypatch):
    from toygpt_cli.errors import ToygptError
    from toygpt_cli.runs import inference

    def read_only(path, obj):
        raise ToygptError(f"could not write {path}: Read-only file system")

    monkeypatch.setattr(inference, "write_json", read_only)
    r = toygpt("eval", "--split", "val")
    assert r.exit_code == 0 and "perplexity" in r.stdout
    assert "could not save eval.json" in r.stderr
