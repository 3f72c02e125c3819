"""data.py: the character tokenizer, the corpus split, id widths and batches."""

import hashlib

import pytest
import torch

from toygpt_cli.corpus import corpus_from_text, load_corpus
from toygpt_cli.data import CharTokenizer, epoch_starts, gather_ids, sample_batch, to_ids
from toygpt_cli.errors import ToygptError


def test_tokenizer_round_trip(tiny_text):
    tok = CharTokenizer.from_text(tiny_text)
    assert tok.decode(tok.encode(tiny_text)) == tiny_text
    assert list(tok.chars) == sorted(set(tiny_text))


def test_tokenizer_names_unknown_characters_once_for_every_caller():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(
        ToygptError, match="the text has characters outside the vocabulary: 'x' 'z'"
    ):
        tok.encode("abzx")
    with pytest.raises(ToygptError, match="the prompt has characters outside"):
        tok.check("abq", "the prompt")
    many = "".join(chr(0x4E00 + i) for i in range(30))
    with pytest.raises(ToygptError, match=r"\.\.\.$"):  # at most ten are named
        tok.check(many)


def test_corpus_split_is_90_10(corpus_file, tiny_text):
    corpus = load_corpus(corpus_file)
    train, val = corpus.splits()
    assert len(train) == int(len(tiny_text) * 0.9)
    assert len(train) + len(val) == len(tiny_text)
    assert corpus.sha256 == hashlib.sha256(corpus_file.read_bytes()).hexdigest()


def test_a_corpus_from_a_string_is_the_same_as_from_its_file(corpus_file, tiny_text):
    a, b = load_corpus(corpus_file), corpus_from_text(tiny_text)
    assert torch.equal(a.tokens, b.tokens) and a.sha256 == b.sha256
    with pytest.raises(ToygptError, match="outside the vocabulary"):
        corpus_from_text("xyz", CharTokenizer("xy"))


def test_sample_batch_targets_are_inputs_shifted():
    data = torch.arange(100)
    g = torch.Generator().manual_seed(0)
    x, y = sample_batch(data, 8, 10, g, torch.device("cpu"))
    assert x.shape == y.shape == (8, 10) and x.dtype == torch.int64
    assert torch.equal(y[:, :-1], x[:, 1:])
    assert torch.equal(y[:, -1], x[:, -1] + 1)


def test_an_epoch_takes_every_window_once_from_one_offset_in_a_new_order():
    n, T = 10_000, 64
    per_epoch = (n - T) // T  # 155 windows fit whatever the offset
    one = epoch_starts(n, T, 0, per_epoch, seed=5)
    two = epoch_starts(n, T, per_epoch, per_epoch, seed=5)
    for starts in (one, two):
        offset = int(starts.min())
        assert 0 <= offset < T and int(starts.max()) + T + 1 <= n  # every window inside
        assert sorted(((starts - offset) // T).tolist()) == list(range(per_epoch))
        assert bool(((starts - offset) % T == 0).all())
    assert not torch.equal(one - one.min(), two - two.min())  # a new order each epoch
    # Any stretch of the sequence follows from its indices alone: batches of 7, 2 ranks.
    pieces = [epoch_starts(n, T, (step * 2 + rank) * 7, 7, seed=5)
              for step in range(30) for rank in range(2)]  # fmt: skip
    assert torch.equal(torch.cat(pieces), epoch_starts(n, T, 0, 420, seed=5))
    assert not torch.equal(epoch_starts(n, T, 0, 50, seed=6), one[:50])


@pytest.mark.parametrize("n", [66, 70, 129, 200])
def test_epoch_windows_fit_texts_barely_longer_than_a_window(n):
    starts = epoch_starts(n, 64, 0, 40, seed=1)
    assert len(starts) == 40 and int(starts.min()) >= 0 and int(starts.max()) + 65 <= n


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32])
def test_ids_of_any_width_widen_to_int64(dtype):
    ids = torch.tensor([0, 1, 200, 65535 if dtype == torch.int16 else 100], dtype=torch.int64)
    stored = ids.to(dtype) if dtype != torch.int16 else ids.to(torch.int32).to(torch.int16)
    assert to_ids(stored).tolist() == ids.tolist()  # 2-byte ids read back unsigned
    index = torch.tensor([[0, 1], [2, 3]])
    assert gather_ids(stored, index).tolist() == ids[index].tolist()
