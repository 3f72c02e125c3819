"""Attention maps of a trained model: which earlier characters each character attends to,
in every layer and head, for a prompt (`toygpt attention`).

The prompt goes through the model exactly as `toygpt sample` reads a prompt (the
generation path, with its key/value cache); a hook on each attention layer takes the input
it sees and computes the weights the plain way (`CausalSelfAttention.weights`, the math the
fused call computes). The result is a PNG grid (layers x heads) and a self-contained HTML
view where pointing at a character shows what it attends to in every head.
"""

from __future__ import annotations

import html
import io
import json
from pathlib import Path

import torch

from toygpt_cli.errors import UsageError
from toygpt_cli.sample import KVCache


@torch.inference_mode()
def attention_maps(model, tokenizer, prompt: str) -> torch.Tensor:
    """(n_layer, n_head, T, T) attention weights of the prompt's characters, row t the
    weights of character t over characters 0..t."""
    if not prompt:
        raise UsageError("give a non-empty --prompt")
    block = model.config.block_size
    if len(prompt) > block:
        raise UsageError(
            f"the prompt has {len(prompt)} characters; the model reads at most block_size "
            f"{block} at once: use a shorter prompt"
        )
    tokenizer.check(prompt, "the prompt", UsageError, "the run's")
    device = next(model.parameters()).device
    ids = torch.tensor([tokenizer.encode(prompt)], device=device)
    maps: list[torch.Tensor] = []

    def look(module, args):
        x, rope = args[0], args[1] if len(args) > 1 else None
        maps.append(module.weights(x, rope)[0].float().cpu())  # (nh, T, T)

    hooks = [block.attn.register_forward_pre_hook(look) for block in model.blocks]
    was_training = model.training
    model.eval()
    try:
        model(ids, cache=KVCache(model.config.n_layer, block), position=0)  # as sampling does
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return torch.stack(maps)


def grid_png(maps: torch.Tensor, prompt: str, title: str) -> bytes:
    """A layers x heads grid of heatmaps (rows: the attending character)."""
    from toygpt_cli.runs.plot import require_matplotlib

    plt = require_matplotlib()
    layers, heads, T, _ = maps.shape
    size = max(1.6, min(3.2, 24 / max(heads, 1)))
    fig, axes = plt.subplots(layers, heads, figsize=(size * heads, size * layers + 0.6),
                             squeeze=False, dpi=100)  # fmt: skip
    labels = [_shown(c) for c in prompt]
    for layer in range(layers):
        for head in range(heads):
            ax = axes[layer][head]
            ax.imshow(maps[layer, head].numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
            ax.set_title(f"layer {layer} head {head}", fontsize=8)
            if T <= 48:
                ax.set_xticks(range(T), labels, fontsize=6)
                ax.set_yticks(range(T), labels, fontsize=6)
            else:
                ax.set_xticks([])
                ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _shown(c: str) -> str:
    return {"\n": "⏎", " ": "␣", "\t": "⇥"}.get(c, c)


def view_html(maps: torch.Tensor, prompt: str, title: str) -> str:
    """A self-contained page: point at (or tap) a character to see, in every layer and
    head, how much it attends to each character before it."""
    data = {
        "chars": [_shown(c) for c in prompt],
        "maps": [
            [[[round(w, 4) for w in row] for row in head] for head in layer]
            for layer in maps.tolist()
        ],  # fmt: skip
    }
    payload = json.dumps(data).replace("</", "<\\/")
    return ATTENTION_PAGE.replace("__TITLE__", html.escape(title)).replace("__DATA__", payload)


ATTENTION_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1rem auto; max-width: 1100px; padding: 0 1rem;
       color: #222; }
h1 { font-size: 1.3rem; }
.prompt, .head .chars { font-family: ui-monospace, monospace; font-size: 1.1rem;
       overflow-wrap: anywhere; line-height: 1.9; }
.ch { padding: 0.1rem 0.15rem; border-radius: 3px; cursor: pointer; white-space: pre; }
.ch.query { outline: 2px solid #c0392b; }
.layer { margin: 1rem 0; }
.heads { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 0.6rem; }
.head { border: 1px solid #ddd; border-radius: 6px; padding: 0.4rem 0.6rem; }
.head h3 { font-size: 0.8rem; margin: 0 0 0.2rem; color: #555; font-weight: 600; }
.head .chars { font-size: 0.95rem; line-height: 1.7; }
.note { color: #666; font-size: 0.9rem; }
</style></head><body>
<h1>__TITLE__</h1>
<p class="note">Point at (or tap) a character of the prompt: each panel shades the characters it
attends to, in that layer and head (darker: more weight; each row of weights sums to 1 over
the characters up to it).</p>
<div class="prompt" id="prompt"></div>
<div id="layers"></div>
<script>
const DATA = __DATA__;
const prompt = document.getElementById("prompt");
const layers = document.getElementById("layers");
DATA.chars.forEach((c, i) => {
  const s = document.createElement("span");
  s.className = "ch"; s.textContent = c; s.dataset.i = i;
  s.addEventListener("mouseenter", () => show(i));
  s.addEventListener("click", () => show(i));
  prompt.appendChild(s);
});
const panels = [];
DATA.maps.forEach((layer, l) => {
  const box = document.createElement("div");
  box.className = "layer";
  box.innerHTML = "<h2>layer " + l + "</h2>";
  const heads = document.createElement("div");
  heads.className = "heads";
  layer.forEach((head, h) => {
    const panel = document.createElement("div");
    panel.className = "head";
    panel.innerHTML = "<h3>head " + h + "</h3>";
    const chars = document.createElement("div");
    chars.className = "chars";
    DATA.chars.forEach((c) => {
      const s = document.createElement("span");
      s.className = "ch"; s.textContent = c; chars.appendChild(s);
    });
    panel.appendChild(chars);
    heads.appendChild(panel);
    panels.push({ layer: l, head: h, spans: chars.children });
  });
  box.appendChild(heads);
  layers.appendChild(box);
});
function show(q) {
  Array.from(prompt.children).forEach((s, i) => s.classList.toggle("query", i === q));
  panels.forEach((p) => {
    const row = DATA.maps[p.layer][p.head][q];
    Array.from(p.spans).forEach((s, i) => {
      s.style.background = "rgba(31, 119, 180, " + (row[i] || 0) + ")";
      s.style.color = row[i] > 0.55 ? "white" : "";
      s.classList.toggle("query", i === q);
    });
  });
}
show(DATA.chars.length - 1);
</script>
</body></html>
"""


def write_outputs(maps: torch.Tensor, prompt: str, title: str, html_path: Path) -> Path:
    """The HTML view at `html_path` and the PNG grid beside it (same name, .png); both
    written whole, or neither."""
    from toygpt_cli.storage.files import write_atomic

    page = view_html(maps, prompt, title).encode()
    png = grid_png(maps, prompt, title)
    png_path = html_path.with_suffix(".png")
    existed = html_path.exists()
    write_atomic(html_path, lambda f: f.write(page))
    try:
        write_atomic(png_path, lambda f: f.write(png))
    except BaseException:
        if not existed:
            html_path.unlink(missing_ok=True)
        raise
    return png_path
