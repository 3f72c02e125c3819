"""`toygpt export`: safetensors files that sample like the run, with tied embeddings, and
one-line errors for damaged files and a missing extra."""

from __future__ import annotations

import json
import re
import sys

import pytest
import torch

from toygpt_cli.config import ModelConfig, TrainConfig
from toygpt_cli.errors import install_hint
from toygpt_cli.runs.export import load_export
from toygpt_cli.runs.inference import load_for_inference
from toygpt_cli.runs.session import start_training

from ..cli_helpers import toygpt
from ..conftest import FIXTURE_CORPUS

safetensors_torch = pytest.importorskip("safetensors.torch")


@pytest.fixture(
    scope="module",
    params=[{}, {"tie_weights": True}, {"pos": "rope", "arch": "modern"}],
    ids=["untied", "tied", "rope-modern"],
)
def run_dir(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    corpus = root / "tiny.txt"
    corpus.write_text(FIXTURE_CORPUS.read_text(encoding="utf-8")[:20_000], encoding="utf-8")
    model = ModelConfig(block_size=16, n_embd=32, n_layer=2, n_head=4, dropout=0.0, **request.param)
    train = TrainConfig(iters=20, eval_interval=20, eval_iters=2, batch_size=8, sample_chars=0)
    return start_training(model, train, corpus, root / "runs").run().run.path


def _sample(ref, *args):
    return toygpt("sample", "--run", ref, "--dtype", "float32", "-n", 60, "--seed", 5, *args)


def test_export_then_sample_gives_the_runs_text(run_dir, tmp_path):
    out = tmp_path / "m.safetensors"
    r = toygpt("export", run_dir, "--output", out)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == str(out) and out.exists()
    from_run = _sample(run_dir, "-p", "ROMEO:", "--num-samples", 2)
    from_file = _sample(out, "-p", "ROMEO:", "--num-samples", 2)
    assert from_run.exit_code == 0 and from_file.exit_code == 0, from_file.stderr
    assert from_file.stdout == from_run.stdout
    assert "step 20" in from_file.stderr and run_dir.name in from_file.stderr


def test_the_file_holds_config_vocabulary_and_each_tensor_once(run_dir, tmp_path):
    out = tmp_path / "m.safetensors"
    assert toygpt("export", run_dir, "-o", out).exit_code == 0
    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as f:
        meta, keys = f.metadata(), set(f.keys())
    config = json.loads((run_dir / "config.json").read_text())
    assert json.loads(meta["model_config"]) == config["model"]
    assert json.loads(meta["vocab"]) == config["vocab"]
    assert json.loads(meta["data"])["path"] == config["data"]["path"]
    tied = config["model"]["tie_weights"]
    assert ("tok_emb.weight" in keys) is not tied and "lm_head.weight" in keys
    assert json.loads(meta["tied"]) == ({"tok_emb.weight": "lm_head.weight"} if tied else {})

    model, tokenizer, info = load_export(out)
    ckpt = torch.load(run_dir / "best.pt", weights_only=True)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, ckpt["model"][name]), name
    if tied:
        assert model.tok_emb.weight is model.lm_head.weight  # tied again, not two copies
    assert tokenizer.chars == config["vocab"] and info.step == 20


def test_loaded_export_knows_the_data_to_evaluate_on(run_dir, tmp_path):
    out = tmp_path / "m.safetensors"
    assert toygpt("export", run_dir, "-o", out).exit_code == 0
    from_run = load_for_inference(str(run_dir), run_dir.parent)
    from_file = load_for_inference(str(out), tmp_path)
    assert from_file.run is None and from_file.name == from_run.name == run_dir.name
    assert from_file.data_path == from_run.data_path and from_file.data_path.exists()
    assert from_file.val_fraction == from_run.val_fraction
    assert from_file.data_sha256 == from_run.data_sha256


def test_default_output_is_in_the_run_folder(run_dir):
    r = toygpt("export", run_dir, "--json")
    assert r.exit_code == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["output"] == str(run_dir / "model.safetensors") and result["step"] == 20


@pytest.mark.parametrize(
    ("setup", "args", "message", "code"),
    [
        (None, ["export", "{run}", "-o", "{tmp}/m.bin"], "--output must end in .safetensors", 2),
        (None, ["export", "{run}", "-o", "{tmp}/no/m.safetensors"], "folder .* does not exist", 1),
        ("garbage", ["sample", "--run", "{tmp}/g.safetensors"], "not a readable safetensors", 1),
        ("foreign", ["sample", "--run", "{tmp}/g.safetensors"], "not a toygpt export", 1),
        (None, ["sample", "--run", "{tmp}/none.safetensors"], "file not found", 1),
        ("export", ["sample", "--run", "{tmp}/g.safetensors", "--checkpoint", "last"], "run fo", 2),
    ],
)
def test_bad_files_and_options_are_one_line(run_dir, tmp_path, setup, args, message, code):
    target = tmp_path / "g.safetensors"
    if setup == "garbage":
        target.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    elif setup == "foreign":
        safetensors_torch.save_file({"w": torch.zeros(2)}, str(target))
    elif setup == "export":
        assert toygpt("export", run_dir, "-o", target).exit_code == 0
    r = toygpt(*[a.format(run=run_dir, tmp=tmp_path) for a in args])
    assert r.exit_code == code, (r.stdout, r.stderr)
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("error: ")
    import re

    assert re.search(message, line), line


def test_missing_extra_names_it(run_dir, tmp_path, monkeypatch):
    out = tmp_path / "m.safetensors"
    assert toygpt("export", run_dir, "-o", out).exit_code == 0
    monkeypatch.setitem(sys.modules, "safetensors", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    for args in (["export", run_dir, "-o", out], ["sample", "--run", out]):
        r = toygpt(*args)
        assert r.exit_code == 1
        (line,) = r.stderr.strip().splitlines()
        assert install_hint("export") in line, line  # as toygpt was installed
    monkeypatch.setitem(sys.modules, "numpy", None)  # safetensors writes through NumPy
    monkeypatch.delitem(sys.modules, "safetensors")
    monkeypatch.delitem(sys.modules, "safetensors.torch")
    r = toygpt("export", run_dir, "-o", out)
    assert r.exit_code == 1 and "[export]' (numpy is missing)" in r.stderr


def _damage_checkpoint(path, edit):
    from toygpt_cli.runs.checkpoint import save_checkpoint

    raw = torch.load(path, weights_only=True)
    edit(raw)
    save_checkpoint(path, {k: v for k, v in raw.items() if k != "format"})


CHECKPOINT_DAMAGE = [
    ("wrong shape", lambda c: c["model"].update({"lm_head.weight": torch.zeros(3, 3)})),
    ("missing key", lambda c: c["model"].pop("tok_emb.weight")),
    ("absurd config", lambda c: c["model_config"].update(n_embd=6000, n_head=6)),
    ("nan weights", lambda c: c["model"]["tok_emb.weight"].fill_(float("nan"))),
    ("no state", lambda c: c.pop("state")),
    ("short vocab", lambda c: c.update(vocab="ab")),
]


@pytest.mark.parametrize(("what", "edit"), CHECKPOINT_DAMAGE, ids=[d[0] for d in CHECKPOINT_DAMAGE])
def test_a_damaged_checkpoint_is_never_exported(run_dir, tmp_path, what, edit):
    import shutil

    run = tmp_path / "runs" / run_dir.name
    shutil.copytree(run_dir, run)
    _damage_checkpoint(run / "best.pt", edit)
    out = tmp_path / "m.safetensors"
    r = toygpt("export", run, "-o", out)
    assert r.exit_code == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "damaged" in r.stderr or "does not fit" in r.stderr, r.stderr
    assert not out.exists() and not list(tmp_path.glob(".m.safetensors*"))


def _rewrite_export(path, metadata=None, tensors=None):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
        data = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    meta.update(metadata or {})
    data.update(tensors or {})
    save_file(data, str(path), metadata=meta)


EXPORT_DAMAGE = [
    ("tied junk", {"tied": '"x"'}, None, "metadata is invalid"),
    ("tied to nothing", {"tied": '{"tok_emb.weight": "nope"}'}, None, "does not fit"),
    ("tied on an untied model", {"tied": '{"tok_emb.weight": "lm_head.weight"}'}, None,
     "does not fit its configuration"),
    ("absurd config", {"model_config": '{"vocab_size": 65, "n_embd": 6000, "n_head": 6}'},
     None, "metadata is invalid|do not fit its configuration"),
    ("bad vocab", {"vocab": '"ab"'}, None, "vocabulary does not fit"),
    ("NaN val fraction", {"val_fraction": "NaN"}, None, "val_fraction must be a finite number"),
    ("val fraction 2", {"val_fraction": "2"}, None, "val_fraction must be"),
    ("changed data", None, {"ln_f.weight": torch.ones(32)}, "fails its sha256"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "meta", "tensors", "message"), EXPORT_DAMAGE,
                         ids=[d[0] for d in EXPORT_DAMAGE])  # fmt: skip
def test_a_damaged_export_is_one_line_and_allocates_nothing_it_claims(
    run_dir, tmp_path, what, meta, tensors, message
):
    out = tmp_path / "m.safetensors"
    assert toygpt("export", run_dir, "-o", out).exit_code == 0
    if tensors and not set(tensors) <= _keys(out):
        pytest.skip("this variant has no such tensor")
    if what == "tied on an untied model" and "tok_emb.weight" not in _keys(out):
        pytest.skip("this variant is tied")
    _rewrite_export(out, meta, tensors)
    r = _sample(out)
    assert r.exit_code == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert re.search(message, r.stderr), r.stderr


def _keys(path):
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return set(f.keys())


def test_an_export_from_before_the_checksum_entry_still_loads(run_dir, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    out = tmp_path / "m.safetensors"
    assert toygpt("export", run_dir, "-o", out).exit_code == 0
    with safe_open(str(out), "pt") as f:
        meta = {k: v for k, v in f.metadata().items() if k != "sha256"}
        data = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    save_file(data, str(out), metadata=meta)
    r = _sample(out)
    assert r.exit_code == 0, r.stderr
