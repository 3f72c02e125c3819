"""runs/checkpoint.py: saving, and reading back checked once: every kind of damage is one
line that says what is wrong, and nothing is allocated for sizes a file merely claims."""

import dataclasses
import resource

import pytest
import torch

from toygpt_cli.config import ModelConfig, TrainConfig
from toygpt_cli.errors import ToygptError
from toygpt_cli.model import GPT
from toygpt_cli.runs.checkpoint import DamagedCheckpoint, read_checkpoint, save_checkpoint

VOCAB = "".join(chr(33 + i) for i in range(65))


def _model():
    torch.manual_seed(0)
    return GPT(ModelConfig(vocab_size=65, block_size=16, n_embd=48, n_layer=2, n_head=6,
                           dropout=0.0)).eval()  # fmt: skip


def _state(gpt=None, **changes):
    gpt = gpt or _model()
    state = {
        "model": gpt.state_dict(),
        "model_config": dataclasses.asdict(gpt.config),
        "train_config": dataclasses.asdict(TrainConfig()),
        "vocab": VOCAB,
        "state": {"step": 7, "best_val": 2.5, "last_eval_step": 5, "wall_seconds": 3.0},
        "optimizer": {"state": {}, "param_groups": []},
        "rng": {"batches": [torch.get_rng_state()], "cpu": [torch.get_rng_state()], "cuda": None},
    }
    state.update(changes)
    return state


def test_round_trip_gives_identical_logits_and_leaves_no_temporary_file(tmp_path):
    model = _model()
    save_checkpoint(tmp_path / "ckpt.pt", _state(gpt=model))
    ckpt = read_checkpoint(tmp_path / "ckpt.pt", resume=True)
    idx = torch.randint(65, (2, 16))
    assert torch.equal(model(idx)[0], ckpt.build_model()(idx)[0])
    assert ckpt.tokenizer.chars == VOCAB and ckpt.step == 7
    assert ckpt.train_config() == TrainConfig()
    assert not list(tmp_path.glob(".*tmp"))


def test_a_bit_flipped_on_disk_is_found_by_the_files_checksums(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, _state())
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10  # inside the weights
    path.write_bytes(data)
    with pytest.raises(DamagedCheckpoint, match="fails its checksum"):
        read_checkpoint(path)


def test_a_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, _state())
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ToygptError, match=r"ckpt.pt is corrupt or truncated"):
        read_checkpoint(path)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_a_checkpoint_with_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "toygpt-checkpoint/1", "x": _Evil()}, path)
    with pytest.raises(ToygptError, match="pickled Python objects"):
        read_checkpoint(path)


def _weights(**kw):
    return {**_model().state_dict(), **kw}


DAMAGE = [
    # (what, changes, message)
    ("not toygpt's", {"format": "other"}, "is not a toygpt checkpoint"),
    ("no model", {"model": None}, "it has no 'model'"),
    ("no state", {"state": None}, "it has no 'state'"),
    ("model not a mapping", {"model": [1, 2]}, "its 'model' is not a mapping"),
    ("a missing weight", {"model": {k: v for k, v in _weights().items() if k != "ln_f.weight"}},
     "its weights do not fit its configuration: it lacks ln_f.weight"),
    ("an extra weight", {"model": _weights(extra=torch.zeros(2))}, "has an unknown extra"),
    ("a wrong shape", {"model": _weights(**{"lm_head.weight": torch.zeros(66, 48)})},
     r"lm_head.weight is \(66, 48\), where a model of its configuration has \(65, 48\)"),
    ("NaN weights", {"model": _weights(**{"lm_head.bias": torch.full((65,), float("nan"))})},
     "lm_head.bias holds NaN or infinite values"),
    ("NaN training weights (--ema)", {"live": _weights(**{"lm_head.bias": torch.full((65,),
     float("nan"))})}, "lm_head.bias holds NaN or infinite values"),
    ("training weights not a mapping (--ema)", {"live": 3}, "its 'live' is not a mapping"),
    ("bad config type", {"model_config": {**dataclasses.asdict(ModelConfig()), "n_layer": "x"}},
     "model configuration is invalid: n_layer must be an integer"),
    ("short vocabulary", {"vocab": "ab"}, "2 characters in its vocabulary for a model of 65"),
    ("repeated characters", {"vocab": "a" * 65}, "not a string of distinct characters"),
    ("vocabulary not a string", {"vocab": 12345}, "not a string of distinct characters"),
    ("negative step", {"state": {"step": -100}}, "its step is -100"),
    ("absurd step", {"state": {"step": 10**30}}, "its step is 1000000000000000000000000000000"),
    ("step of the wrong type", {"state": {"step": "ten"}}, "its step is 'ten'"),
    ("NaN best val", {"state": {"step": 3, "best_val": float("nan")}}, "its best val loss is nan"),
    ("a weight on the meta device", {"model": _weights(**{"lm_head.bias": torch.zeros(65,
     device="meta")})}, "lm_head.bias is not a plain tensor"),
    ("a sparse weight", {"model": _weights(**{"lm_head.bias": torch.zeros(65).to_sparse()})},
     "lm_head.bias is not a plain tensor"),
    ("integer weights", {"model": _weights(**{"lm_head.bias": torch.zeros(65, dtype=torch.int64)})},
     "lm_head.bias holds torch.int64 values"),
    ("a billion wide", {"model_config": {**dataclasses.asdict(ModelConfig()), "n_embd": 10**9}},
     "n_embd must be at most 65536"),
    ("a million layers", {"model_config": {**dataclasses.asdict(ModelConfig()), "n_layer": 10**6}},
     "n_layer must be at most 1024"),
    ("too many parameters", {"model_config": {**dataclasses.asdict(ModelConfig()), "n_embd": 60000,
     "n_head": 6, "n_layer": 1000}}, "more than toygpt trains"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "changes", "message"), DAMAGE, ids=[d[0] for d in DAMAGE])
def test_damage_is_one_line_naming_what_is_wrong(tmp_path, what, changes, message):
    path = tmp_path / "ckpt.pt"
    state = {k: v for k, v in _state(**changes).items() if v is not None}
    save_checkpoint(path, state)
    if "format" in changes:  # save_checkpoint writes its own format tag
        torch.save({**state, "format": changes["format"]}, path)
    with pytest.raises(ToygptError, match=message) as info:
        read_checkpoint(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("missing", ["optimizer", "rng", "train_config"])
def test_resuming_needs_the_optimizer_the_random_streams_and_the_configuration(tmp_path, missing):
    path = tmp_path / "best.pt"
    save_checkpoint(path, {k: v for k, v in _state().items() if k != missing})
    read_checkpoint(path)  # enough to sample
    with pytest.raises(DamagedCheckpoint, match=missing):
        read_checkpoint(path, resume=True).train_config()


def test_an_absurd_size_a_file_claims_allocates_nothing(tmp_path):
    path = tmp_path / "ckpt.pt"
    cfg = {**dataclasses.asdict(ModelConfig(vocab_size=65)), "n_embd": 12_000, "n_head": 6}
    save_checkpoint(path, _state(model_config=cfg))  # small weights, a 12,000-wide config
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(DamagedCheckpoint, match="do not fit its configuration|is \\("):
        read_checkpoint(path)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 200  # a real model of that width would take tens of GB


@pytest.mark.parametrize(
    "damage",
    ["wrong shape", "sparse", "NaN"],
)
def test_an_optimizer_state_that_does_not_fit_is_one_line_not_a_crash(tmp_path, damage):
    """torch trusts the moments it loads; a wrong shape can crash the process in the step."""
    from toygpt_cli.optim import load_optimizer_state, make_optimizer

    model = _model()
    optimizer = make_optimizer(model, TrainConfig(), torch.device("cpu"))
    model(torch.randint(65, (2, 16)), torch.randint(65, (2, 16)))[1].backward()
    optimizer.step()
    state = optimizer.state_dict()
    moments = next(iter(state["state"].values()))
    if damage == "wrong shape":
        moments["exp_avg"] = torch.zeros(3)
    elif damage == "sparse":
        moments["exp_avg"] = moments["exp_avg"].to_sparse()
    else:
        moments["exp_avg_sq"] = torch.full_like(moments["exp_avg_sq"], float("nan"))
    fresh = make_optimizer(_model(), TrainConfig(), torch.device("cpu"))
    with pytest.raises(ValueError, match="exp_avg") as info:
        load_optimizer_state(fresh, state, model)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_checkpoint_that_is_not_a_file_is_refused_at_once(tmp_path, kind):
    import os

    path = tmp_path / "ckpt.pt"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")  # endless: reading it would never finish
    with pytest.raises(DamagedCheckpoint, match="is not a regular file"):
        read_checkpoint(path)
