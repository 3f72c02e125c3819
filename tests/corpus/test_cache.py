"""corpus/cache.py, the token cache: ids identical to the old per-character encoding, any
UTF-8 text, encoded once and reused, rebuilt when the text changes, never half-written."""

import hashlib
import json
from pathlib import Path

import pytest
import torch

from toygpt_cli.corpus import cache as tokens
from toygpt_cli.corpus import corpus_from_text, encoding, load_corpus
from toygpt_cli.data import CharTokenizer, gather_ids, sample_batch, to_ids
from toygpt_cli.errors import ToygptError
from toygpt_cli.evaluate import fixed_windows
from toygpt_cli.storage import mapped
from toygpt_cli.storage.mapped import note_reads

from ..conftest import FIXTURE_CORPUS


def _old_splits(text: str, val_fraction: float = 0.1):
    """The corpus as toygpt encoded it before the cache: a Python list, then int64."""
    tok = CharTokenizer.from_text(text)
    ids = torch.tensor(tok.encode(text), dtype=torch.long)
    n = int(len(ids) * (1 - val_fraction))
    return tok, ids[:n], ids[n:]


def _old_sample_batch(data, batch_size, block_size, generator):
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    window = data[starts[:, None] + torch.arange(block_size + 1)]
    return window[:, :-1], window[:, 1:]


def _cache_files(folder):
    cache = folder / tokens.CACHE_DIR
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


@pytest.fixture
def shakespeare(tmp_path):
    path = tmp_path / "shakespeare.txt"
    path.write_bytes(FIXTURE_CORPUS.read_bytes())
    return path


@pytest.mark.parametrize("cached", [False, True])
def test_tiny_shakespeare_batches_are_unchanged_bit_for_bit(shakespeare, cached):
    text = shakespeare.read_text(encoding="utf-8")
    old_tok, old_train, old_val = _old_splits(text)
    if cached:
        load_corpus(shakespeare)  # the second load reads the memory-mapped cache
    corpus = load_corpus(shakespeare)
    train, val = corpus.splits()
    assert corpus.tokenizer.chars == old_tok.chars
    assert train.dtype == torch.uint8  # 1 byte per character, not 8
    assert torch.equal(train.long(), old_train) and torch.equal(val.long(), old_val)
    old_gen, new_gen = torch.Generator().manual_seed(1337), torch.Generator().manual_seed(1337)
    for _ in range(50):
        x_old, y_old = _old_sample_batch(old_train, 32, 16, old_gen)
        x, y = sample_batch(train, 32, 16, new_gen, torch.device("cpu"))
        assert x.dtype == y.dtype == torch.long
        assert torch.equal(x, x_old) and torch.equal(y, y_old)
    assert torch.equal(old_gen.get_state(), new_gen.get_state())
    # the eval windows are drawn from the split lengths, which are unchanged
    assert torch.equal(
        fixed_windows(len(val), 64, 16, 1339), fixed_windows(len(old_val), 64, 16, 1339)
    )


def test_splits_are_views_of_one_memory_map(shakespeare):
    corpus = load_corpus(shakespeare)
    train, val = corpus.splits()
    base = corpus.tokens.data_ptr()
    assert train.data_ptr() == base
    assert val.data_ptr() == base + corpus.n_train * corpus.tokens.element_size()
    assert len(corpus.tokens) == corpus.n_chars == len(train) + len(val)


TEXTS = {
    "latin": "Zoë's café: naïve façade, 1½ crème brûlée.\n" * 20,
    "mostly ascii": ("plain words " * 40 + "and 語 or ÿ\n") * 5 + "Ω",
    "cjk and emoji": "春眠不覺曉，處處聞啼鳥。🌸🐦 spring\n" * 20 + "😀 end",
    "mixed scripts": "Ω≈ç√∫ Привет мир עברית العربية हिन्दी 🇫🇷\n" * 10,
}


@pytest.mark.parametrize(
    "chunk, sub_block", [(1, 4), (2, 4), (3, 4), (5, 4), (64, 5), (1 << 20, 7)]
)
@pytest.mark.parametrize("name", list(TEXTS))
def test_any_utf8_text_encodes_like_the_tokenizer(tmp_path, monkeypatch, name, chunk, sub_block):
    monkeypatch.setattr(encoding, "CHUNK", chunk)  # chunks and blocks that cut characters apart
    monkeypatch.setattr(encoding, "SUB_BLOCK", sub_block)
    text = TEXTS[name]
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    corpus = load_corpus(path)
    tok = CharTokenizer.from_text(text)
    assert corpus.tokenizer.chars == tok.chars
    assert to_ids(corpus.tokens).tolist() == tok.encode(text)
    assert corpus.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    memory = corpus_from_text(text)
    assert torch.equal(memory.tokens, corpus.tokens) and memory.sha256 == corpus.sha256


@pytest.mark.parametrize("n_distinct, width", [(300, 2), (40_000, 2), (70_000, 4)])
def test_large_vocabularies_use_wider_ids(tmp_path, n_distinct, width):
    chars = [chr(c) for c in range(0x20, 0x20 + n_distinct + 2048) if not 0xD800 <= c < 0xE000]
    text = "".join(chars[:n_distinct]) * 2
    path = tmp_path / "wide.txt"
    path.write_text(text, encoding="utf-8")
    corpus = load_corpus(path)
    assert corpus.tokens.element_size() == width and corpus.tokenizer.vocab_size == n_distinct
    ids = list(range(n_distinct)) * 2  # the text lists its vocabulary in code-point order
    assert to_ids(corpus.tokens).tolist() == ids
    idx = torch.tensor([[n_distinct - 1, 0, n_distinct + 5]])
    assert gather_ids(corpus.tokens, idx).tolist() == [[ids[i] for i in idx[0]]]


def test_second_load_reuses_the_cache(shakespeare, monkeypatch):
    first = load_corpus(shakespeare)
    files = _cache_files(shakespeare.parent)
    assert len(files) == 3  # the facts, the ids and the ids' check
    assert sorted(n.rsplit(".", 1)[-1] for n in files) == ["check", "json", "tokens"]

    def fail(*args, **kwargs):
        raise AssertionError("read the whole text again")

    monkeypatch.setattr(encoding, "scan", fail)
    monkeypatch.setattr(encoding, "encode", fail)
    again = load_corpus(shakespeare)
    assert torch.equal(again.tokens, first.tokens) and again.sha256 == first.sha256
    assert _cache_files(shakespeare.parent) == files


def test_changed_text_is_encoded_again_and_the_old_cache_removed(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abcabc" * 10, encoding="utf-8")
    before = load_corpus(path)
    old_files = _cache_files(tmp_path)
    path.write_text("xyz" * 20, encoding="utf-8")
    after = load_corpus(path)
    assert after.tokenizer.chars == "xyz" and after.sha256 != before.sha256
    assert to_ids(after.tokens).tolist() == [0, 1, 2] * 20
    new_files = _cache_files(tmp_path)
    assert len(new_files) == 3 and not set(new_files) & set(old_files)


def test_a_run_vocabulary_gets_its_own_ids(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("bca" * 10, encoding="utf-8")
    corpus = load_corpus(path, tokenizer=CharTokenizer("abcd"))
    assert to_ids(corpus.tokens).tolist() == [1, 2, 0] * 10
    with pytest.raises(ToygptError, match="t.txt has characters outside the run's vocabulary: 'c'"):
        load_corpus(path, tokenizer=CharTokenizer("ab"))


def test_damaged_cache_files_are_rebuilt(shakespeare):
    good = load_corpus(shakespeare).tokens.clone()
    cache = shakespeare.parent / tokens.CACHE_DIR
    (ids_file,) = cache.glob("*.tokens")
    (facts_file,) = cache.glob("*.json")
    ids_file.write_bytes(ids_file.read_bytes()[:100])  # truncated
    facts_file.write_text("{not json")
    assert torch.equal(load_corpus(shakespeare).tokens, good)


def test_an_interrupted_encoding_leaves_nothing(shakespeare, monkeypatch):
    def interrupted(pieces, vocab, write):
        write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(encoding, "encode", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_corpus(shakespeare)
    assert [n for n in _cache_files(shakespeare.parent) if not n.endswith(".json")] == []


def test_unwritable_folder_falls_back_to_the_user_cache(shakespeare, tmp_path, monkeypatch):
    (shakespeare.parent / tokens.CACHE_DIR).write_text("in the way")  # mkdir fails here
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))
    corpus = load_corpus(shakespeare)
    files = sorted(p.name for p in (tmp_path / "home-cache" / "toygpt").iterdir())
    assert len(files) == 3 and all(n.startswith("shakespeare.txt-") for n in files)
    assert load_corpus(shakespeare).tokens.data_ptr() != corpus.tokens.data_ptr()  # mapped again


def test_no_writable_cache_keeps_the_ids_in_memory(tmp_path, monkeypatch):
    path = tmp_path / "t.txt"
    path.write_text("hello world\n" * 5, encoding="utf-8")
    (tmp_path / tokens.CACHE_DIR).write_text("in the way")
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "not-a-folder"))
    corpus = load_corpus(path)
    tok = CharTokenizer.from_text(path.read_text())
    assert to_ids(corpus.tokens).tolist() == tok.encode(path.read_text())


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "data file not found"),
        (b"", "data file is empty"),
        (b"abc\x00def", r"not text \(it contains NUL bytes\)"),
        (b"caf\xe9 cr\xe8me", r"not UTF-8 text: .* \(invalid byte at offset 3\)"),
        ("日本語".encode() + b"\xff", r"invalid byte at offset 9\)"),
        (b"ascii first, " * 3 + b"\xc3(", r"invalid byte at offset 39\)"),
        ("日本語".encode()[:-1], r"invalid byte at offset 6\)"),  # cut inside a character
    ],
)
@pytest.mark.parametrize("chunk, sub_block", [(2, 4), (1 << 20, 4), (1 << 20, 1 << 16)])
def test_bad_text_is_one_clear_error(tmp_path, monkeypatch, content, message, chunk, sub_block):
    monkeypatch.setattr(encoding, "CHUNK", chunk)
    monkeypatch.setattr(encoding, "SUB_BLOCK", sub_block)
    path = tmp_path / "bad.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ToygptError, match=message):
        load_corpus(path)
    assert _cache_files(tmp_path) == []


def test_a_folder_is_not_a_data_file(tmp_path):
    with pytest.raises(ToygptError, match="data path is not a regular file"):
        load_corpus(tmp_path)


def test_text_changing_while_read_is_refused(shakespeare, monkeypatch):
    load_corpus(shakespeare)  # a cache exists: the next load hashes the file first
    shakespeare.write_text("another text\n" * 100)
    monkeypatch.setattr(tokens, "sha256_file", lambda path, progress=None, chunk=0: "0" * 64)
    with pytest.raises(ToygptError, match="changed while it was being read"):
        load_corpus(shakespeare)


def test_progress_reports_every_pass(shakespeare, monkeypatch):
    monkeypatch.setattr(encoding, "CHUNK", 50_000)

    def phases(events):
        return list(dict.fromkeys(p for p, _, _ in events))

    first = []
    load_corpus(shakespeare, progress=lambda *event: first.append(event))
    assert phases(first) == ["scanning", "encoding"]  # a new file: the scan finds its sha256
    shakespeare.write_text(shakespeare.read_text() + "more\n")  # a known file, changed
    again = []
    load_corpus(shakespeare, progress=lambda *event: again.append(event))
    assert phases(again) == ["hashing", "scanning", "encoding"]
    size = shakespeare.stat().st_size
    for phase in phases(again):
        done = [d for p, d, total in again if p == phase and total == size]
        assert done == sorted(done) and done[-1] == size and len(done) > 1, phase


def test_text_changing_before_it_is_encoded_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "t.txt"
    path.write_text("abc" * 10, encoding="utf-8")
    old_sha = load_corpus(path).sha256
    for ids_file in (tmp_path / tokens.CACHE_DIR).glob("*.tokens"):
        ids_file.unlink()
    path.write_text("cab" * 10, encoding="utf-8")  # same size and vocabulary, other text
    monkeypatch.setattr(tokens, "sha256_file", lambda path, progress=None, chunk=0: old_sha)
    with pytest.raises(ToygptError, match="changed while it was being read"):
        load_corpus(path)
    assert list((tmp_path / tokens.CACHE_DIR).glob("*.tokens")) == []


def _mapped_kb(path):
    """Resident kB of this process's mappings of `path` (Linux), or None."""
    try:
        smaps = Path("/proc/self/smaps").read_text().split("\n")
    except OSError:
        return None
    total, inside = 0, False
    for line in smaps:
        if line and not line[0].isupper():  # a mapping's header line
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def test_reading_a_memory_map_unmaps_its_pages_now_and_then(shakespeare, monkeypatch):
    monkeypatch.setattr(mapped, "TRIM_EVERY", 40)
    corpus = load_corpus(shakespeare)
    (path,) = (shakespeare.parent / tokens.CACHE_DIR).glob("*.tokens")
    if _mapped_kb(path) is None:
        pytest.skip("no /proc/self/smaps")
    train, _ = corpus.splits()
    expected = train.long()
    note_reads(train, 40)  # unmaps what that read
    assert _mapped_kb(path) == 0
    g = torch.Generator().manual_seed(0)
    starts = torch.randint(len(train) - 9, (39, 1), generator=g)
    index = starts + torch.arange(9)
    assert torch.equal(gather_ids(train, index), expected[index])
    assert _mapped_kb(path) > 0  # 39 windows read: the pages are mapped
    assert torch.equal(gather_ids(train, index[:1]), expected[index[:1]])
    assert _mapped_kb(path) == 0  # the 40th window: unmapped again
    assert torch.equal(gather_ids(train, index), expected[index])  # and readable
    note_reads(expected, 1_000)  # a tensor in memory is left alone


@pytest.mark.parametrize(
    "damage",
    ["zeros", "random", "another vocabulary", "no check", "check garbage", "forged"],
)
def test_a_damaged_token_file_is_encoded_again(shakespeare, damage):
    good = load_corpus(shakespeare).tokens.clone()
    (ids,) = (shakespeare.parent / tokens.CACHE_DIR).glob("*.tokens")
    check = Path(f"{ids}.check")
    if damage == "zeros":
        ids.write_bytes(bytes(ids.stat().st_size))  # all-newline text, the same size
    elif damage == "random":
        ids.write_bytes(
            bytes(range(256)) * (ids.stat().st_size // 256) + bytes(ids.stat().st_size % 256)
        )
    elif damage == "another vocabulary":
        check.write_text(check.read_text().replace('"vocab": "', '"vocab": "X'))
    elif damage == "forged":  # shuffled, with a check file made to agree
        import random
        import zlib

        data = bytearray(ids.read_bytes())
        random.Random(0).shuffle(data)
        ids.write_bytes(bytes(data))
        record = json.loads(check.read_text())
        record["crc32"] = zlib.crc32(bytes(data))
        check.write_text(json.dumps(record))
    elif damage == "no check":
        check.unlink()  # a token file of an older toygpt
    else:
        check.write_text("{")
    assert torch.equal(load_corpus(shakespeare).tokens, good)


@pytest.mark.parametrize(
    "facts",
    [
        {"vocab": "ab"},  # lacks characters: ids would be wrong
        {"extra": True},  # names a character the text lacks: a wrong vocabulary size
        {"vocab": "aab"},  # repeats
        {"vocab": 12345},
        {"vocab": "\n\ud800"},  # a lone surrogate: no UTF-8 text has one
        None,  # JSON null instead of an object
        {"vocab": ""},
        {"n_chars": 17},  # a wrong count
        {"n_chars": "many"},
        {"n_bytes": -1},
    ],
)
def test_damaged_text_facts_are_found_and_the_text_scanned_again(shakespeare, facts):
    good = load_corpus(shakespeare)
    (path,) = (shakespeare.parent / tokens.CACHE_DIR).glob("*.json")
    raw = json.loads(path.read_text())
    if facts is not None and "extra" in facts:
        extra = next(c for c in "~#%é" if c not in raw["vocab"])
        facts = {"vocab": "".join(sorted(raw["vocab"] + extra))}
    path.write_text(json.dumps(None if facts is None else {**raw, **facts}))
    again = load_corpus(shakespeare)
    assert again.tokenizer.chars == good.tokenizer.chars
    assert torch.equal(again.tokens, good.tokens)
    assert json.loads(path.read_text()) == raw  # rewritten


@pytest.mark.parametrize("which", ["facts", "check"])
def test_a_fifo_in_the_cache_is_passed_over_without_waiting(shakespeare, which):
    """A FIFO would block a reader until a writer came; the cache treats it as unreadable."""
    import os
    import threading

    good = load_corpus(shakespeare).tokens.clone()
    cache = shakespeare.parent / tokens.CACHE_DIR
    (victim,) = cache.glob("*.json") if which == "facts" else cache.glob("*.tokens.check")
    victim.unlink()
    os.mkfifo(victim)
    result = {}
    worker = threading.Thread(target=lambda: result.update(c=load_corpus(shakespeare)))
    worker.start()
    worker.join(30)
    if worker.is_alive():  # unblock it before failing
        with open(os.open(victim, os.O_WRONLY | os.O_NONBLOCK), "w"):
            pass
        worker.join(5)
        pytest.fail("load_corpus waited on a FIFO")
    assert torch.equal(result["c"].tokens, good)
