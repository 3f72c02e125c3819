import hashlib

import pytest
import torch

from toygpt_cli.data import CharTokenizer, Corpus, read_text, sample_batch
from toygpt_cli.errors import ToygptError


def test_tokenizer_round_trip(tiny_text):
    tok = CharTokenizer.from_text(tiny_text)
    assert tok.decode(tok.encode(tiny_text)) == tiny_text
    assert list(tok.chars) == sorted(set(tiny_text))


def test_tokenizer_names_unknown_characters():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ToygptError, match="'x' 'z'"):
        tok.encode("abzx")


def test_corpus_split_is_90_10(corpus_file, tiny_text):
    corpus = Corpus.load(corpus_file)
    train, val = corpus.splits()
    assert len(train) == int(len(tiny_text) * 0.9)
    assert len(train) + len(val) == len(tiny_text)
    assert corpus.sha256 == hashlib.sha256(corpus_file.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "content, message",
    [(None, "not found"), (b"", "empty"), (b"\xff\xfe\xfa bad", "not UTF-8"), (b"a\x00b", "NUL")],
)
def test_read_text_errors(tmp_path, content, message):
    path = tmp_path / "f.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ToygptError, match=message):
        read_text(path)


def test_sample_batch_targets_are_inputs_shifted():
    data = torch.arange(100)
    g = torch.Generator().manual_seed(0)
    x, y = sample_batch(data, 8, 10, g, torch.device("cpu"))
    assert x.shape == y.shape == (8, 10)
    assert torch.equal(y[:, :-1], x[:, 1:])
    assert torch.equal(y[:, -1], x[:, -1] + 1)
