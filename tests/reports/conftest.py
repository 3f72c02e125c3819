"""Two tiny trained runs to look at: one-layer models, learned and rotary positions, with
different learning rates (so their configurations differ)."""

from __future__ import annotations

import pytest

from toygpt_cli.config import ModelConfig, TrainConfig
from toygpt_cli.runs.session import start_training

from ..conftest import FIXTURE_CORPUS


@pytest.fixture(scope="package")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("reports")
    corpus = root / "tiny.txt"
    corpus.write_text(FIXTURE_CORPUS.read_text(encoding="utf-8")[:20_000], encoding="utf-8")
    paths = []
    for pos, lr in (("learned", 1e-3), ("rope", 3e-3)):
        model = ModelConfig(block_size=16, n_embd=32, n_layer=1, n_head=4, dropout=0.0, pos=pos)
        train = TrainConfig(iters=40, eval_interval=20, eval_iters=2, batch_size=8,
                            sample_chars=60, learning_rate=lr)  # fmt: skip
        paths.append(start_training(model, train, corpus, root / "runs").run().run.path)
    return paths
