"""runs/finetune.py: a new run from another run's weights, on text with new characters."""

import json

import pytest
import torch

from toygpt_cli.config import TrainConfig
from toygpt_cli.runs.checkpoint import read_checkpoint
from toygpt_cli.runs.finetune import InitFrom
from toygpt_cli.runs.session import resume_training, start_training
from toygpt_cli.sample import sample_text

from ..cli_helpers import toygpt
from ..conftest import TINY_ARGS


@pytest.fixture
def new_text(tmp_path, tiny_text):
    """Shakespeare's characters and a few it never had: digits, accents, a euro sign."""
    lines = [f"{i} € café — {line}" for i, line in enumerate(tiny_text.splitlines()[:600])]
    path = tmp_path / "new.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _cfg(**kw):
    return TrainConfig(**{"iters": 150, "eval_interval": 150, "eval_iters": 4,
                          "batch_size": 16, "sample_chars": 0, **kw})  # fmt: skip


def test_new_characters_extend_the_vocabulary_and_start_at_the_mean(corpus_file, tiny_model,
                                                                   tmp_path, new_text):  # fmt: skip
    base = start_training(tiny_model, _cfg(iters=20), corpus_file, tmp_path / "a").run().run
    ckpt = read_checkpoint(base.file("best.pt"))
    init = InitFrom(ckpt, base.name)
    text_vocab = "".join(sorted(set(new_text.read_text(encoding="utf-8"))))
    tokenizer, added = init.vocabulary(text_vocab)
    assert tokenizer.chars.startswith(ckpt.tokenizer.chars)  # old ids kept
    assert set(added) >= {"€", "é", "—", "0"} and not set(added) & set(ckpt.tokenizer.chars)
    weights = init.weights(tokenizer.vocab_size, seed=1)
    emb = weights["tok_emb.weight"]
    assert emb.shape[0] == tokenizer.vocab_size
    assert torch.equal(emb[: ckpt.model_config.vocab_size], ckpt.weights["tok_emb.weight"])
    torch.testing.assert_close(emb[-len(added) :].mean(0), ckpt.weights["tok_emb.weight"].mean(0),
                               atol=0.05, rtol=0)  # fmt: skip


def test_a_grown_model_with_a_pair_embedding_reads_old_text_as_before(
    corpus_file, tiny_model, tmp_path, new_text
):
    # The pair embedding grows with the vocabulary: every old pair keeps its row, so text
    # made of old characters gets the logits it got before (over the old characters).
    from dataclasses import replace

    from toygpt_cli.model import GPT

    cfg = replace(tiny_model, pos="rope", arch="modern", bigram=True, x0_skip=True)
    base = start_training(cfg, _cfg(iters=20), corpus_file, tmp_path / "a").run().run
    ckpt = read_checkpoint(base.file("best.pt"))
    init = InitFrom(ckpt, base.name)
    tokenizer, added = init.vocabulary("".join(sorted(set(new_text.read_text("utf-8")))))
    old_model = GPT(ckpt.model_config).eval()
    old_model.load_state_dict(ckpt.weights)
    grown = GPT(init.model_config(tokenizer.vocab_size)).eval()
    grown.load_state_dict(init.weights(tokenizer.vocab_size, seed=1))
    assert grown.bigram_emb.weight.abs().sum() > 0  # trained pairs came along
    idx = torch.randint(ckpt.model_config.vocab_size, (2, 16))
    old_logits = old_model(idx)[0]
    torch.testing.assert_close(grown(idx)[0][..., : old_logits.size(-1)], old_logits)
    new_id = torch.full((1, 1), tokenizer.vocab_size - 1)  # a new character reads fine
    assert torch.isfinite(grown(torch.cat((idx[:1, :4], new_id), 1))[0]).all()
    old_rows = len(ckpt.weights["bigram_emb.weight"])  # the new pairs start at zero
    assert not grown.bigram_emb.weight[old_rows:].any()


def test_a_full_hashed_pair_table_is_kept_as_it_is():
    from toygpt_cli.config import BIGRAM_MAX_ROWS
    from toygpt_cli.runs.finetune import _regrow_pairs

    table = torch.randn(BIGRAM_MAX_ROWS, 4)
    assert torch.equal(_regrow_pairs(table, 320), table)


@pytest.mark.slow
def test_fine_tuning_beats_a_fresh_model_on_the_new_text(corpus_file, tiny_model, tmp_path,
                                                        new_text):  # fmt: skip
    base = start_training(tiny_model, _cfg(iters=300), corpus_file, tmp_path / "a").run().run
    init = InitFrom(read_checkpoint(base.file("best.pt")), base.name)
    tuned = start_training(tiny_model, _cfg(), new_text, tmp_path / "b", init=init).run()
    fresh = start_training(tiny_model, _cfg(), new_text, tmp_path / "c").run()
    assert tuned.last_eval["val_loss"] < fresh.last_eval["val_loss"] - 0.1
    cfg = tuned.run.config()
    assert cfg["init_from"]["run"] == base.name and "€" in cfg["init_from"]["added_chars"]
    loaded = read_checkpoint(tuned.run.file("best.pt"))
    text = sample_text(loaded.build_model(), loaded.tokenizer, max_new_tokens=3000, seed=1)[0]
    assert set(text) & set(cfg["init_from"]["added_chars"])  # it writes the new characters
    assert resume_training(tuned.run, 10).run().step == 160  # an ordinary run from here on


def test_the_command_line_takes_the_architecture_from_the_run(dirs, corpus_file, new_text):
    _, runs = dirs
    r = toygpt("train", "--data", corpus_file, *TINY_ARGS, "--iters", "10", "--name", "base")
    assert r.exit_code == 0, r.stderr
    r = toygpt("train", "--init-from", "base", "--data", new_text, "--iters", "10",
               "--eval-interval", "10", "--batch-size", "8", "--eval-iters", "2",
               "--preset", "cpu-1m")  # the preset's shape is ignored: the run's wins  # fmt: skip
    assert r.exit_code == 0, r.stderr
    (run,) = [p for p in runs.iterdir() if json.loads((p / "config.json").read_text()).get(
        "init_from")]  # fmt: skip
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["n_embd"] == 32 and cfg["init_from"]["run"].startswith("2")
    for args in (["sample", "--run", run.name, "-n", "20", "-p", "café"],
                 ["eval", "--run", run.name, "--split", "val"]):  # fmt: skip
        assert toygpt(*args).exit_code == 0, args
    r = toygpt("train", "--init-from", "base", "--data", new_text, "--n-layer", "3")
    assert r.exit_code == 2
    assert r.stderr.strip().startswith("error: --n-layer comes from the run --init-from")
    r = toygpt("train", "--resume", "--init-from", "base")
    assert r.exit_code == 2 and "not with --resume" in r.stderr
