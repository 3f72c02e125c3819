"""`toygpt attention`: the maps it shows are the model's attention (rows sum to 1 over the
characters up to each one, nothing from later ones), as a PNG grid and an HTML view; bad
input is one line and leaves no file behind."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from toygpt_cli.reports.attention import attention_maps
from toygpt_cli.runs.inference import load_for_inference

from ..cli_helpers import toygpt

PROMPT = "ROMEO:\nWhat, ho!"


def _page_data(page: str) -> dict:
    return json.loads(re.search(r"const DATA = (.*);\n", page).group(1).replace("<\\/", "</"))


@pytest.mark.parametrize("which", [0, 1], ids=["learned", "rope"])
def test_the_maps_are_causal_and_each_row_sums_to_one(two_runs, tmp_path, which):
    out = tmp_path / "look.html"
    result = toygpt("attention", "--run", two_runs[which], "--prompt", PROMPT, "--output", out)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(out)
    png = out.with_suffix(".png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5_000
    data = _page_data(out.read_text(encoding="utf-8"))
    assert data["chars"] == ["R", "O", "M", "E", "O", ":", "⏎", "W", "h", "a", "t", ",", "␣",
                             "h", "o", "!"]  # fmt: skip
    maps = torch.tensor(data["maps"])  # (layers, heads, T, T)
    assert maps.shape == (1, 4, 16, 16)
    torch.testing.assert_close(maps.sum(-1), torch.ones(1, 4, 16), atol=2e-3, rtol=0)
    assert not maps.triu(1).any()  # nothing from later characters
    seen = torch.ones(16, 16).tril().bool()
    assert (maps[..., seen] > 0).float().mean() > 0.9  # earlier characters get weight
    assert len({round(float(v), 3) for v in maps.flatten()}) > 20  # not a constant pattern


@pytest.mark.parametrize("which", [0, 1], ids=["learned", "rope"])
def test_the_maps_reproduce_what_the_model_computes(two_runs, which):
    """The weights times the values give the attention layer's output as the model ran it."""
    loaded = load_for_inference(str(two_runs[which]), two_runs[which].parent, dtype="float32")
    model = loaded.model.eval()
    seen = {}

    def grab(module, args, output):
        seen["x"], seen["rope"], seen["y"] = args[0], (args[1] if len(args) > 1 else None), output

    hook = model.blocks[0].attn.register_forward_hook(grab)
    try:
        maps = attention_maps(model, loaded.tokenizer, PROMPT)
    finally:
        hook.remove()
    attn = model.blocks[0].attn
    with torch.inference_mode():
        _, _, v = attn.project(seen["x"], seen["rope"])
        B, T, C = seen["x"].shape
        by_hand = attn.proj((maps[0][None] @ v).transpose(1, 2).reshape(B, T, C))
    torch.testing.assert_close(by_hand, seen["y"], rtol=1e-4, atol=1e-5)


def test_the_view_goes_to_the_run_folder_by_default(two_runs):
    result = toygpt("attention", "--run", two_runs[0], "--prompt", "To be")
    assert result.exit_code == 0, result.stderr
    page = two_runs[0] / "attention.html"
    assert result.stdout.strip() == str(page)
    assert (two_runs[0] / "attention.png").exists()
    assert "To be" in page.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--run", "no-such-run", "--prompt", "To be"], "no-such-run"),
        (["--prompt", ""], "non-empty --prompt"),
        (["--prompt", "To be ☃"], "'☃'"),
        (["--prompt", "x" * 17], "block_size 16"),
        (["--prompt", "To be", "--output", "{tmp}/no/such/folder/a.html"], "no/such/folder"),
        (["--prompt", "To be", "--output", "{tmp}/a.txt"], "FILE.html"),
        (["--prompt", "To be", "--output", "{tmp}"], "FILE.html"),
    ],
    ids=[
        "unknown run",
        "empty prompt",
        "outside vocabulary",
        "too long",
        "no folder",
        "not html",
        "a folder",
    ],  # fmt: skip
)
def test_bad_input_is_one_line_and_writes_nothing(two_runs, tmp_path, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--run" not in args:
        args = ["--run", str(two_runs[0]), *args]
    before = sorted(p.name for p in two_runs[0].iterdir())
    result = toygpt("attention", *args)
    assert result.exit_code in (1, 2)
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []
    assert sorted(p.name for p in two_runs[0].iterdir()) == before


def test_an_unwritable_output_is_one_line(two_runs):
    """/proc takes no new files, even from root."""
    result = toygpt("attention", "--run", two_runs[0], "--prompt", "To be", "--output",
                    "/proc/attention.html")  # fmt: skip
    assert result.exit_code == 1
    assert "/proc/attention.html" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not list(Path("/proc").glob("*attention*"))


def test_an_output_that_is_a_folder_is_refused(two_runs, tmp_path):
    (tmp_path / "a.html").mkdir()
    result = toygpt("attention", "--run", two_runs[0], "--prompt", "To be", "--output",
                    tmp_path / "a.html")  # fmt: skip
    assert result.exit_code == 2
    assert "is a folder" in result.stderr and len(result.stderr.splitlines()) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["a.html"]


def test_the_png_is_not_left_alone_when_the_page_cannot_be_written(two_runs, tmp_path):
    """Both files or neither: a PNG name taken by a folder fails after the page was written."""
    (tmp_path / "a.png").mkdir()
    result = toygpt("attention", "--run", two_runs[0], "--prompt", "To be", "--output",
                    tmp_path / "a.html")  # fmt: skip
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]
