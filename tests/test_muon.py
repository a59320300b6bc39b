"""Muon on the hidden matrices, AdamW on the rest (tinytrans.train.muon, section 3.5)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from test_train import StopAt, quiet, run, tiny_data, tiny_model

from tinytrans.train import MuonAdamW, TrainConfig, Trainer
from tinytrans.train.loop import build_optimizer
from tinytrans.train.muon import NEWTON_SCHULZ_COEFFICIENTS, orthogonalize


def quintic(x: float, steps: int = 5) -> float:
    """What the iteration does to one singular value of the normalized matrix."""
    a, b, c = NEWTON_SCHULZ_COEFFICIENTS
    for _ in range(steps):
        x = a * x + b * x**3 + c * x**5
    return x


@given(st.floats(2e-3, 1.0))
def test_five_iterations_bring_every_singular_value_above_a_five_hundredth_near_one(x):
    # Tuned for speed, not convergence: [0.68, 1.21], not 1 (Jordan et al. 2024).
    assert 0.68 < quintic(x) < 1.21


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(2, 48),
    cols=st.integers(2, 48),
    batch=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_orthogonalize_brings_every_singular_value_near_one(rows, cols, batch, seed):
    g = torch.randn(batch, rows, cols, generator=torch.Generator().manual_seed(seed))
    normalized = torch.linalg.svdvals(g.double()) / torch.linalg.matrix_norm(g.double())[:, None]
    assume(normalized.min() > 0.01)  # a nearly singular direction needs more iterations
    out = orthogonalize(g)
    assert out.shape == g.shape and out.dtype == g.dtype
    singular = torch.linalg.svdvals(out.double())
    assert singular.min() > 0.6 and singular.max() < 1.3  # [0.68, 1.21], bfloat16 aside


def test_orthogonalize_keeps_the_directions_of_the_update():
    u, _ = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(0)))
    v, _ = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(1)))
    g = u[:, :8] @ torch.diag(torch.linspace(0.1, 10.0, 8)) @ v.T  # tall, badly conditioned
    cosine = torch.nn.functional.cosine_similarity(
        orthogonalize(g).flatten(), (u[:, :8] @ v.T).flatten(), dim=0
    )
    assert cosine > 0.97


def step_both(mine, reference, ours, theirs):
    """One step of both optimizers on the same random gradients."""
    for p, q in zip(ours, theirs, strict=True):
        p.grad = torch.randn_like(p)
        q.grad = p.grad.clone()
    mine.step()
    reference.step()


def test_adamw_half_matches_torch_adamw():
    torch.manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(5)), torch.nn.Parameter(torch.randn(3, 4))]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    settings_ = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    mine = MuonAdamW([{"params": ours}], **settings_)
    reference = torch.optim.AdamW(theirs, **settings_, foreach=False)
    for step in range(5):
        step_both(mine, reference, ours, theirs)
        for p, q in zip(ours, theirs, strict=True):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=f"step {step}")


@pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon from torch 2.9")
def test_muon_half_matches_torch_muon_scaled_like_adamw():
    torch.manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(12, 8)), torch.nn.Parameter(torch.randn(12, 8))]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    mine = MuonAdamW([{"params": ours, "muon": True}], lr=1e-2, weight_decay=0.1)
    reference = torch.optim.Muon(theirs, lr=1e-2, weight_decay=0.1,
                                 adjust_lr_fn="match_rms_adamw")  # fmt: skip
    for _ in range(3):
        step_both(mine, reference, ours, theirs)
    for p, q in zip(ours, theirs, strict=True):  # bfloat16 iterations: about 3 digits
        torch.testing.assert_close(p, q, rtol=0, atol=2e-3)


def test_muon_groups_take_matrices_only():
    with pytest.raises(ValueError, match="matrices only"):
        MuonAdamW([{"params": [torch.nn.Parameter(torch.zeros(4))], "muon": True}])


def test_build_optimizer_puts_the_decayed_matrices_under_muon():
    data = tiny_data()
    model = tiny_model(data.vocab_size)
    optimizer = build_optimizer(model, quiet(optimizer="muon"))
    assert isinstance(optimizer, MuonAdamW)
    muon, rest = optimizer.param_groups
    assert muon["muon"] and not rest["muon"]
    assert all(p.dim() == 2 for p in muon["params"])
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    assert embeddings and not embeddings & {id(p) for p in muon["params"]}
    assert isinstance(build_optimizer(model, quiet()), torch.optim.AdamW)


def test_unknown_optimizer_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"optimizer must be one of \('adamw', 'muon'\)"):
        TrainConfig(max_steps=1, optimizer="sgd")


def test_muon_trains_and_resumes_bit_exact(tmp_path):
    full = run(quiet(optimizer="muon", out_dir=str(tmp_path / "full")))
    assert full.train_losses[-1] < full.train_losses[0] - 0.25  # 12 steps at lr 3e-3
    interrupted = run(quiet(optimizer="muon", out_dir=str(tmp_path / "cut")), [StopAt(5)])
    assert interrupted.step == 5
    resumed = run(quiet(optimizer="muon", out_dir=str(tmp_path / "cut")),
                  resume=tmp_path / "cut" / "last.pt")  # fmt: skip
    assert torch.equal(torch.tensor(resumed.train_losses), torch.tensor(full.train_losses))


def test_resume_with_the_other_optimizer_names_the_fix(tmp_path):
    run(quiet(max_steps=2, optimizer="muon", out_dir=str(tmp_path)))
    data = tiny_data()
    adamw = Trainer(tiny_model(data.vocab_size), data, quiet())
    with pytest.raises(ValueError, match=r"optimizer 'muon'.*--optimizer muon"):
        adamw.resume(tmp_path / "last.pt")
