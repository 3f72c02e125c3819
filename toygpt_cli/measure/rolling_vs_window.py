"""How the rolling key/value cache changes a rotary model's predictions past block_size.
A measurement script, not a test:

    python -m toygpt_cli.measure.rolling_vs_window --run RUN [--runs-dir runs] [--chars 4096]

Past block_size, `toygpt sample` with rotary positions keeps a rolling cache: every cached
position keeps the keys and values it got when it was computed, so the model reads the text
with a sliding attention window (each position sees itself and the block_size - 1 before
it, at every layer). The straightforward method recomputes the last block_size characters
from scratch for every new one. With more than one layer the two differ; this scores both
on the run's val split, each prediction made from a full block_size of context:

- window: each target predicted from the window of the block_size characters before it;
- rolling: one forward over a long stretch, which is what the rolling cache computes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from toygpt_cli.data import train_chars
from toygpt_cli.runs.inference import load_for_inference


@torch.inference_mode()
def compare(model, ids: torch.Tensor, chars: int, stretches: int = 6) -> tuple[float, float, int]:
    """Mean loss (window, rolling) over predictions past block_size in `stretches` spread
    stretches of `chars` characters of `ids`, and how many predictions that is."""
    block = model.config.block_size
    window, rolling = [], []
    step = max((len(ids) - chars - 1) // stretches, 1)
    for start in range(0, len(ids) - chars - 1, step)[:stretches]:
        x, y = ids[start : start + chars], ids[start + 1 : start + chars + 1]
        logits = model(x[None])[0]  # longer than block_size: a sliding window
        rolling.append(
            F.cross_entropy(logits[0, block - 1 :].float(), y[block - 1 :], reduction="none")
        )
        windows = x.unfold(0, block, 1)  # (chars - block + 1, block)
        for i in range(0, len(windows), 256):
            part = windows[i : i + 256]
            last = model(part)[0][:, -1].float()  # (n, vocab): each window's next character
            target = y[block - 1 + i : block - 1 + i + len(part)]
            window.append(F.cross_entropy(last, target, reduction="none"))
    w, r = torch.cat(window), torch.cat(rolling)
    return w.mean().item(), r.mean().item(), len(r)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="latest")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--chars", type=int, default=4096, help="characters per stretch")
    args = parser.parse_args()
    loaded = load_for_inference(args.run, args.runs_dir, dtype="float32")
    if loaded.model.config.pos != "rope":
        raise SystemExit("this run has learned positions: it always recomputes the window")
    text = Path(loaded.data_path).read_text(encoding="utf-8")
    val = text[train_chars(len(text), loaded.val_fraction) :]
    ids = torch.tensor(loaded.tokenizer.encode(val), dtype=torch.long)
    w, r, n = compare(loaded.model, ids, args.chars)
    block = loaded.model.config.block_size
    print(
        f"{loaded.name}: {n:,} predictions of the val split past block_size {block}, float32: "
        f"window recomputed {w:.4f}, rolling cache {r:.4f} ({r - w:+.4f})"
    )


if __name__ == "__main__":
    main()
