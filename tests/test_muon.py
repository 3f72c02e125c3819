"""muon.py and optim.py: the Newton-Schulz orthogonalisation, the Muon step, the combined
optimizer's groups and schedule, training with it, and exact resume."""

import io
from dataclasses import replace

import pytest
import torch

from toygpt_cli import optim
from toygpt_cli.config import ModelConfig, TrainConfig
from toygpt_cli.corpus import corpus_from_text
from toygpt_cli.data import CharTokenizer
from toygpt_cli.errors import UsageError
from toygpt_cli.model import GPT
from toygpt_cli.muon import Muon, MuonAdamW, orthogonalize
from toygpt_cli.optim import apply_hparams, lr_factor, make_optimizer, set_lr
from toygpt_cli.runs.checkpoint import read_checkpoint
from toygpt_cli.runs.session import resume_training, start_training
from toygpt_cli.train import Trainer

CPU = torch.device("cpu")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_orthogonalize_brings_singular_values_near_one(dtype):
    torch.manual_seed(0)
    g = torch.randn(3, 16, 40) * torch.logspace(-2, 1, 40)  # badly conditioned
    s = torch.linalg.svdvals(orthogonalize(g, dtype=dtype).float())
    assert s.min() > 0.5 and s.max() < 1.3
    # Batched as one product, each matrix gets what it would get alone.
    alone = orthogonalize(g[1:2], dtype=torch.float32)
    torch.testing.assert_close(orthogonalize(g)[1:2], alone, rtol=1e-4, atol=1e-5)


def test_orthogonalize_is_the_quintic_iteration_written_out():
    """Each step is x <- a x + (b G + c G G) x with G = x x^T, after scaling by the norm."""
    from toygpt_cli.muon import NS_COEFFS

    g = torch.randn(2, 6, 9, dtype=torch.float64)
    a, b, c = NS_COEFFS
    x = g / (g.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(3):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    torch.testing.assert_close(orthogonalize(g, steps=3, dtype=torch.float64), x)


def test_muon_step_is_momentum_then_orthogonalised_update():
    torch.manual_seed(0)
    wide = torch.nn.Parameter(torch.randn(8, 12))
    tall = torch.nn.Parameter(torch.randn(12, 4))
    qkv = torch.nn.Parameter(torch.randn(12, 4))  # three 4 x 4 matrices
    before = [p.detach().clone() for p in (wide, tall, qkv)]
    opt = Muon([{"params": [wide, tall, qkv], "splits": [1, 1, 3]}], lr=0.1, momentum=0.5,
               weight_decay=0.2)  # fmt: skip
    grads = [torch.randn_like(p) for p in (wide, tall, qkv)]
    for p, g in zip((wide, tall, qkv), grads, strict=True):
        p.grad = g.clone()
    opt.step()
    # momentum buffer 0.5 g; Nesterov update g + 0.5 (0.5 g - g) = 0.75 g
    expect_wide = before[0] * (1 - 0.1 * 0.2) - 0.1 * orthogonalize(0.75 * grads[0][None])[0]
    torch.testing.assert_close(wide.detach(), expect_wide, rtol=1e-5, atol=1e-6)
    ortho_tall = orthogonalize(0.75 * grads[1].T[None])[0].T
    expect_tall = before[1] * 0.98 - 0.1 * 3**0.5 * ortho_tall  # scaled by sqrt(12 / 4)
    torch.testing.assert_close(tall.detach(), expect_tall, rtol=1e-5, atol=1e-6)
    blocks = orthogonalize(0.75 * grads[2].view(3, 4, 4))  # each block on its own
    torch.testing.assert_close(qkv.detach(), before[2] * 0.98 - 0.1 * blocks.reshape(12, 4))
    torch.testing.assert_close(opt.state[wide]["momentum_buffer"], 0.5 * grads[0])


def _model(**kw):
    torch.manual_seed(0)
    cfg = dict(vocab_size=65, block_size=16, n_embd=32, n_layer=2, n_head=4, dropout=0.0)
    return GPT(ModelConfig(**{**cfg, **kw}))


def test_muon_takes_the_block_matrices_and_adamw_the_rest():
    model = _model()
    opt = make_optimizer(model, TrainConfig(optimizer="muon", muon_lr=0.05), CPU)
    assert isinstance(opt, MuonAdamW)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {g["name"]: [names[id(p)] for p in g["params"]] for g in opt.param_groups}
    assert groups["muon"] == [
        f"blocks.{i}.{m}.weight" for i in (0, 1) for m in ("attn.qkv", "attn.proj", "ffwd.fc",
                                                           "ffwd.proj")
    ]  # fmt: skip
    assert groups["matrices"] == ["tok_emb.weight", "pos_emb.weight", "lm_head.weight"]
    assert sum(map(len, groups.values())) == len(names)  # every parameter, once
    assert opt.param_groups[-1]["splits"] == [3, 1, 1, 1] * 2
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == {"matrices": 1e-3, "vectors": 1e-3, "muon": 0.05}


def test_the_grad_scaler_steps_muon_adamw_like_any_optimizer():
    # float16 training (CUDA) unscales and steps through torch's GradScaler: with a power
    # of two as the scale, the scaled step is the plain one exactly.
    idx = torch.randint(65, (4, 16))
    weights = []
    for scaled in (False, True):
        model = _model()
        opt = make_optimizer(model, TrainConfig(optimizer="muon"), CPU)
        scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, enabled=scaled)
        _, loss = model(idx, idx)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        scaler.step(opt)
        scaler.update()
        weights.append(model.state_dict())
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name


def test_the_schedule_scales_each_groups_own_peak_rate():
    cfg = TrainConfig(optimizer="muon", learning_rate=1e-2, muon_lr=0.04, min_lr=1e-3,
                      warmup_iters=10, lr_schedule="cosine")  # fmt: skip
    opt = make_optimizer(_model(), cfg, CPU)
    set_lr(opt, lr_factor(cfg, 4, 0.0))  # warmup: 5/11 of each peak
    assert {g["name"]: g["lr"] for g in opt.param_groups} == pytest.approx(
        {"matrices": 1e-2 * 5 / 11, "vectors": 1e-2 * 5 / 11, "muon": 0.04 * 5 / 11}
    )
    set_lr(opt, lr_factor(cfg, 500, 1.0))  # the end of the decay: min_lr / lr of each peak
    assert {g["name"]: g["lr"] for g in opt.param_groups} == pytest.approx(
        {"matrices": 1e-3, "vectors": 1e-3, "muon": 0.004}
    )


def test_wsd_holds_the_peak_then_falls_in_a_straight_line_to_the_floor():
    cfg = TrainConfig(learning_rate=1e-2, min_lr=1e-3, warmup_iters=10, lr_schedule="wsd",
                      cooldown=0.25)  # fmt: skip
    assert lr_factor(cfg, 4, 0.0) == pytest.approx(5 / 11)  # the warmup as before
    assert [lr_factor(cfg, 100, p) for p in (0.0, 0.5, 0.75)] == [1.0, 1.0, 1.0]
    assert lr_factor(cfg, 100, 0.875) == pytest.approx(0.1 + 0.5 * 0.9)  # half-way down
    assert lr_factor(cfg, 100, 1.0) == pytest.approx(0.1)
    assert lr_factor(cfg, 100, 1.5) == pytest.approx(0.1)  # past the end: the floor
    cosine = TrainConfig(learning_rate=1e-2, min_lr=1e-3, lr_schedule="cosine")
    assert lr_factor(cosine, 100, 0.5) == pytest.approx(0.55)  # cosine is unchanged


def test_a_changed_muon_learning_rate_takes_effect():
    opt = make_optimizer(_model(), TrainConfig(optimizer="muon"), CPU)
    apply_hparams(opt, TrainConfig(optimizer="muon", muon_lr=0.01, muon_momentum=0.9))
    muon = opt.param_groups[-1]
    assert (muon["base_lr"], muon["lr"], muon["momentum"]) == (0.01, 0.01, 0.9)


@pytest.mark.slow  # a long training
def test_training_with_muon_lowers_the_loss(corpus_file, tiny_model, tmp_path):
    cfg = TrainConfig(iters=150, eval_interval=150, eval_iters=8, batch_size=16, sample_chars=0,
                      optimizer="muon", learning_rate=3e-3)  # fmt: skip
    modern = replace(tiny_model, pos="rope", arch="modern", logit_softcap=15.0, dropout=0.0)
    for model_cfg in (tiny_model, modern):
        result = start_training(model_cfg, cfg, corpus_file, tmp_path / model_cfg.arch).run()
        losses = [m["val_loss"] for m in result.run.metrics()]
        assert losses[-1] < losses[0] - 1.0, model_cfg


@pytest.fixture(params=["float32", "auto"])
def ns_precision(request, monkeypatch):
    """Newton-Schulz in float32, and in whatever --dtype auto picks on this CPU."""
    if request.param == "float32":
        monkeypatch.setattr(optim, "ns_dtype", lambda cfg, device: torch.float32)
    return request.param


def _weights(run):
    return read_checkpoint(run.file("ckpt.pt"), resume=True).data


@pytest.mark.slow  # a long training
def test_resume_with_muon_is_exact(corpus_file, tiny_model, tmp_path, ns_precision):
    model_cfg = replace(tiny_model, pos="rope", arch="modern")
    cfg = TrainConfig(iters=40, eval_interval=20, eval_iters=2, batch_size=8, sample_chars=20,
                      optimizer="muon")  # fmt: skip
    straight = start_training(model_cfg, replace(cfg, iters=70), corpus_file, tmp_path / "a")
    straight = straight.run()
    first = start_training(model_cfg, cfg, corpus_file, tmp_path / "b").run()
    second = resume_training(first.run, steps=30).run()
    a, b = _weights(straight.run), _weights(second.run)
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    momentum = a["optimizer"]["muon"]["state"]
    assert momentum and all(
        torch.equal(s["momentum_buffer"], b["optimizer"]["muon"]["state"][i]["momentum_buffer"])
        for i, s in momentum.items()
    )
    assert a["state"]["best_val"] == b["state"]["best_val"]


def _corpus(text):
    return corpus_from_text(text, CharTokenizer("".join(sorted(set(text)))))


def test_resume_that_changes_the_muon_learning_rate_is_exact(tiny_text, ns_precision):
    # Changing muon_lr on resume continues exactly as a run whose rate changed at that step.
    corpus = _corpus(tiny_text)
    model_cfg = ModelConfig(vocab_size=corpus.tokenizer.vocab_size, block_size=16, n_embd=32,
                            n_layer=2, n_head=4, dropout=0.1)  # fmt: skip
    cfg = TrainConfig(batch_size=8, sample_chars=0, optimizer="muon", muon_lr=0.02)
    changed = replace(cfg, muon_lr=0.005)
    live = Trainer(model_cfg, cfg, corpus)
    for _ in range(15):
        live.train_step()
    buffer = io.BytesIO()
    torch.save(live.state_dict(), buffer)
    live.cfg = changed
    apply_hparams(live.optimizer, changed)
    for _ in range(15):
        live.train_step()
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    resumed = Trainer(model_cfg, changed, corpus)
    resumed.load_state_dict(state)
    assert resumed.optimizer.param_groups[-1]["base_lr"] == 0.005
    for _ in range(15):
        resumed.train_step()
    for name, tensor in live.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name


def test_muon_learning_rate_may_change_on_resume_and_the_optimizer_may_not(
    corpus_file, tiny_model, tiny_train, tmp_path
):
    cfg = replace(tiny_train, iters=20, optimizer="muon")
    run = start_training(tiny_model, cfg, corpus_file, tmp_path).run().run
    resumed = resume_training(run, 5, {"muon_lr": 0.01, "muon_weight_decay": 0.1})
    assert [g["base_lr"] for g in resumed.optimizer.param_groups] == [1e-3, 1e-3, 0.01]
    assert resumed.optimizer.param_groups[-1]["weight_decay"] == 0.1
    assert resumed.run().status == "completed"
    assert run.config()["resumes"][-1]["changed"] == {
        "muon_lr": [0.02, 0.01],
        "muon_weight_decay": [0.0, 0.1],
    }
    with pytest.raises(UsageError, match="optimizer is fixed for the life of a run"):
        resume_training(run, 5, {"optimizer": "adamw"})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_muon_and_the_modern_block_train_on_cuda(corpus_file, tiny_model, tmp_path, dtype):
    # float16 goes through the GradScaler, which unscales MuonAdamW's groups like AdamW's.
    cfg = TrainConfig(iters=150, eval_interval=150, eval_iters=8, batch_size=16, sample_chars=40,
                      optimizer="muon", learning_rate=3e-3, grad_clip=1.0, device="cuda",
                      dtype=dtype)  # fmt: skip
    model_cfg = replace(tiny_model, pos="rope", arch="modern", dropout=0.0)
    result = start_training(model_cfg, cfg, corpus_file, tmp_path).run()
    losses = [m["val_loss"] for m in result.run.metrics()]
    assert losses[-1] < losses[0] - 1.0


@pytest.mark.parametrize(("dtype", "expected"), [("float32", torch.float32),
                                                 ("bfloat16", torch.bfloat16)])  # fmt: skip
def test_newton_schulz_runs_in_the_precision_training_asked_for(dtype, expected):
    opt = make_optimizer(_model(), TrainConfig(optimizer="muon", dtype=dtype), CPU)
    assert opt.muon.ns_dtype == expected


def test_decay_matrices_only_decays_every_2d_weight_embeddings_included():
    from dataclasses import fields

    from toygpt_cli.config import TrainConfig as Train
    from toygpt_cli.declare import Opt  # noqa: F401

    model = _model()
    opt = make_optimizer(model, Train(decay_matrices_only=True, weight_decay=0.1), CPU)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for g in opt.param_groups if g["weight_decay"] for p in g["params"]}
    assert {"tok_emb.weight", "pos_emb.weight", "lm_head.weight"} <= decayed
    assert not any(n.endswith("bias") for n in decayed)
    (help_text,) = [
        f.metadata["opt"].help for f in fields(Train) if f.name == "decay_matrices_only"
    ]
    assert "embeddings" in help_text and "not biases" in help_text
