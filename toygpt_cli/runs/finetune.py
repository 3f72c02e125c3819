"""Starting a new run from another run's weights (`toygpt train --init-from RUN`).

The new run takes the architecture of the run it starts from, and its weights. A character
vocabulary is the text's own, so new text usually brings characters the run has never
seen: they are added at the end of the vocabulary (old characters keep their ids), and
each new character's embedding row and output row start at the mean of the existing rows,
plus a little noise (a hundredth of their spread) so that new characters differ from
each other. A new character is thus first read as an "average" character and predicted
about as often as an average one, which the first steps on the new text correct. The pair
embedding (`bigram`) keeps every pair of old characters and starts the pairs with a new one
at zero, as a new run does (up to 255 characters; past that its rows are shared by hashing).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from toygpt_cli.config import ModelConfig, bigram_rows
from toygpt_cli.data import CharTokenizer
from toygpt_cli.runs.checkpoint import Checkpoint

GROWN = ("tok_emb.weight", "lm_head.weight", "lm_head.bias")  # one row per character


@dataclass
class InitFrom:
    """The checkpoint a new run starts from, and the run it belongs to."""

    checkpoint: Checkpoint
    run: str

    def vocabulary(self, text_vocab: str) -> tuple[CharTokenizer, str]:
        """The new run's vocabulary: the run's, then the text's new characters (sorted);
        and those new characters."""
        old = self.checkpoint.tokenizer.chars
        added = "".join(c for c in text_vocab if c not in self.checkpoint.tokenizer.stoi)
        return CharTokenizer(old + added), added

    def model_config(self, vocab_size: int) -> ModelConfig:
        return replace(self.checkpoint.model_config, vocab_size=vocab_size)

    def weights(self, vocab_size: int, seed: int) -> dict[str, torch.Tensor]:
        """The run's weights, with rows for the characters added (see the module)."""
        weights = dict(self.checkpoint.weights)
        old = self.checkpoint.model_config.vocab_size
        gen = torch.Generator().manual_seed(seed)
        if vocab_size != old:
            for key in GROWN:
                if key not in weights:
                    continue
                rows = weights[key]
                mean, spread = rows.mean(dim=0, keepdim=True), rows.std(dim=0, keepdim=True)
                noise = torch.randn((vocab_size - old, *rows.shape[1:]), generator=gen) * spread
                weights[key] = torch.cat((rows, mean + 0.01 * noise))
            if "bigram_emb.weight" in weights:
                weights["bigram_emb.weight"] = _regrow_pairs(weights["bigram_emb.weight"],
                                                             vocab_size)  # fmt: skip
        if self.checkpoint.model_config.tie_weights:  # one matrix under two names
            weights["tok_emb.weight"] = weights["lm_head.weight"]
        return weights

    def record(self, added: str) -> dict:
        """What config.json says about where the run started."""
        return {
            "run": self.run,
            "checkpoint": str(self.checkpoint.path),
            "step": self.checkpoint.step,
            "added_chars": added,
        }


def _regrow_pairs(table: torch.Tensor, new: int) -> torch.Tensor:
    """The pair embedding of a vocabulary grown to `new` characters: a pair's row
    does not depend on the vocabulary (model.bigram_index), so the old rows stay and the
    rows of pairs with a new character are added at zero (past 255 characters the table is
    full and hashed: it stays as it is)."""
    grown = torch.zeros(bigram_rows(new), table.size(1), dtype=table.dtype)
    grown[: len(table)] = table[: len(grown)]
    return grown
