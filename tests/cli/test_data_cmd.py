"""`toygpt data fetch` and `toygpt data info`."""

import json

import pytest

from ..cli_helpers import toygpt


def test_data_fetch_from_local_server(dirs, http_server):
    data, _ = dirs
    url = http_server["base"] + "/input.txt"
    r = toygpt("data", "fetch", "--url", url, "--sha256", http_server["sha256"])
    assert r.exit_code == 0, r.stderr
    assert (data / "input.txt").read_bytes() == http_server["body"]
    r = toygpt("data", "fetch", "--url", url)
    assert r.exit_code == 0 and "already there" in r.stderr
    r = toygpt("data", "info", str(data / "input.txt"), "--json")
    info = json.loads(r.stdout)
    assert info["chars"] == len(http_server["body"]) and info["vocab_size"] > 10
    assert info["recorded_sha256"] == http_server["sha256"]


def test_data_fetch_404_and_mismatch_are_one_line_errors(dirs, http_server):
    data, _ = dirs
    r = toygpt("data", "fetch", "--url", http_server["base"] + "/nothing.txt")
    assert r.exit_code == 1 and r.stderr.strip() == (
        f"error: HTTP 404 from {http_server['base']}/nothing.txt"
    )
    r = toygpt(
        "data",
        "fetch",
        "--url",
        http_server["base"] + "/wrong.txt",
        "--sha256",
        http_server["sha256"],
    )
    assert r.exit_code == 1 and "checksum mismatch" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (data / "wrong.txt").exists()


@pytest.mark.parametrize("forged", ["vocab", "chars"])
def test_data_info_reads_the_text_not_the_cache(corpus_file, tiny_text, forged):
    """What `data info` prints is the text's truth, even over a cache made to disagree."""
    first = json.loads(toygpt("data", "info", corpus_file, "--json").stdout)
    (facts,) = (corpus_file.parent / ".toygpt-cache").glob("*.json")
    raw = json.loads(facts.read_text())
    if forged == "vocab":
        raw["vocab"] = raw["vocab"][1:]
    else:
        raw["n_chars"] -= 1
    facts.write_text(json.dumps(raw))
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


def test_data_info_finds_tiny_shakespeare_as_train_does(dirs, tiny_text):
    data, _ = dirs
    data.mkdir(parents=True)
    (data / "input.txt").write_text(tiny_text)  # the original project's file name
    (data / "SHA256SUMS").write_text("")
    r = toygpt("data", "info")
    assert r.exit_code == 1 and "no Tiny Shakespeare in" in r.stderr  # not its checksum
