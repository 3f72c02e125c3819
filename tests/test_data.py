import hashlib
import socket

import pytest
import torch

from toygpt_cli.data import CharTokenizer, Corpus, read_text, sample_batch
from toygpt_cli.download import fetch, read_checksums
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


def test_fetch_downloads_and_verifies(tmp_path, http_server):
    url = http_server["base"] + "/input.txt"
    result = fetch(url, tmp_path, sha256=http_server["sha256"])
    assert result.downloaded and result.path.read_bytes() == http_server["body"]
    assert read_checksums(tmp_path) == {"input.txt": http_server["sha256"]}
    again = fetch(url, tmp_path, sha256=http_server["sha256"])
    assert not again.downloaded
    assert http_server["hits"]["/input.txt"] == 1


def test_fetch_records_sha_without_expected(tmp_path, http_server):
    result = fetch(http_server["base"] + "/input.txt", tmp_path)
    assert read_checksums(tmp_path)["input.txt"] == result.sha256 == http_server["sha256"]


def test_fetch_retries_after_500(tmp_path, http_server):
    result = fetch(http_server["base"] + "/flaky.txt", tmp_path, backoff=0)
    assert result.path.read_bytes() == http_server["body"]
    assert http_server["hits"]["/flaky.txt"] == 2


def _only_checksums_or_nothing(folder):
    return [p.name for p in folder.iterdir()] if folder.exists() else []


@pytest.mark.parametrize(
    "route, message",
    [
        ("/missing.txt", "HTTP 404"),
        ("/always500.txt", "HTTP 503"),
        ("/cut.txt", "cut off|closed after"),
        ("/wrong.txt", "checksum mismatch"),
    ],
)
def test_fetch_failures_leave_nothing(tmp_path, http_server, route, message):
    folder = tmp_path / "data"
    with pytest.raises(ToygptError, match=message):
        fetch(
            http_server["base"] + route,
            folder,
            sha256=http_server["sha256"],
            backoff=0,
            retries=1,
        )
    assert not folder.exists()  # not even an empty folder


def test_fetch_offline_is_one_clear_error(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ToygptError, match="cannot reach 127.0.0.1"):
        fetch(f"http://127.0.0.1:{port}/x.txt", tmp_path, backoff=0, retries=1)
    assert _only_checksums_or_nothing(tmp_path) == []


def test_fetch_keeps_existing_file_when_refetch_fails(tmp_path, http_server):
    good = fetch(http_server["base"] + "/input.txt", tmp_path)
    with pytest.raises(ToygptError):
        fetch(
            http_server["base"] + "/input.txt".replace("input", "cut"),
            tmp_path,
            name="input.txt",
            force=True,
            backoff=0,
            retries=0,
        )
    assert good.path.read_bytes() == http_server["body"]
