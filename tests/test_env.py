"""tinytrans.env: device choice, seeding, budgets and the version report."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from tinytrans import env


def test_pick_device_auto_is_cpu_without_accelerators(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert env.pick_device() == torch.device("cpu")


def test_pick_device_prefers_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert env.pick_device().type == "cuda"


def test_pick_device_rejects_missing_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        env.pick_device("cuda")


def test_seed_everything_repeats_all_generators():
    def draw():
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    env.seed_everything(123)
    first = draw()
    env.seed_everything(123)
    assert draw() == first


def test_budget_scales_with_environment(monkeypatch):
    monkeypatch.delenv("TINYTRANS_BUDGET_SCALE", raising=False)
    assert env.budget(60) == 60
    monkeypatch.setenv("TINYTRANS_BUDGET_SCALE", "0.5")
    assert env.budget(60) == 30
    monkeypatch.setenv("TINYTRANS_BUDGET_SCALE", "0")
    with pytest.raises(ValueError, match="TINYTRANS_BUDGET_SCALE"):
        env.budget(60)


def test_platform_name(monkeypatch):
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release")
    assert env.platform_name() == "colab"
    monkeypatch.delenv("COLAB_RELEASE_TAG")
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    assert env.platform_name() == "kaggle"


def test_report_prints_versions_and_device(capsys):
    env.report()
    out = capsys.readouterr().out
    for key in ("tinytrans", "torch", "python", "device"):
        assert key in out
    assert torch.__version__ in out
