"""tinytrans.env: device choice, seeding, budgets and the version report."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import pytest
import torch

from tinytrans import env


@pytest.fixture
def gpu(monkeypatch):
    """A patched CUDA runtime: ``gpu(capability, arch_list, ...)`` makes torch.cuda report one
    (or ``count``) device(s) of that compute capability, built for ``arch_list``; the tiny
    test operation succeeds unless ``op_error`` is given. Nothing touches a real GPU."""
    real_arange = torch.arange

    def make(
        capability=(8, 0),
        arch_list=("sm_80", "sm_90"),
        *,
        count=1,
        name="NVIDIA Test GPU",
        op_error=None,
        bf16_native=None,
    ):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: name)
        monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(arch_list))
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "device", lambda index: contextlib.nullcontext())
        native = capability >= (8, 0) if bf16_native is None else bf16_native
        monkeypatch.setattr(
            torch.cuda,
            "is_bf16_supported",
            lambda including_emulation=True: True if including_emulation else native,
        )

        def arange(*args, device=None, **kwargs):
            if device is not None and str(device).startswith("cuda"):
                if op_error is not None:
                    raise op_error
                device = None  # compute the test operation on the CPU instead
            return real_arange(*args, device=device, **kwargs)

        monkeypatch.setattr(torch, "arange", arange)
        env.cuda_problem.cache_clear()

    yield make
    env.cuda_problem.cache_clear()
    env.mps_problem.cache_clear()
    env.fallback_reason = None


def test_pick_device_auto_is_cpu_without_accelerators(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert env.pick_device() == torch.device("cpu")


def test_pick_device_prefers_a_working_cuda(gpu, capsys):
    gpu((7, 5), ("sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"))
    assert env.pick_device() == torch.device("cuda")
    assert capsys.readouterr().out == ""
    assert env.fallback_reason is None


def test_pick_device_falls_back_when_torch_has_no_kernels_for_the_gpu(gpu, capsys):
    """Kaggle's P100 (capability 6.0) with a CUDA build that starts at sm_70."""
    gpu(
        (6, 0), ("sm_70", "sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"), name="Tesla P100"
    )
    assert env.pick_device() == torch.device("cpu")
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out
    assert out.startswith("tinytrans: using the CPU: CUDA is present but unusable: Tesla P100")
    assert "compute capability 6.0" in out and "sm_70" in out
    assert env.fallback_reason.startswith("CUDA is present but unusable")
    env.pick_device()  # asked again (every chapter does): the reason is printed once
    assert capsys.readouterr().out == ""


def test_pick_device_falls_back_when_the_test_operation_fails(gpu, capsys):
    gpu((8, 6), ("sm_86",), op_error=RuntimeError("CUDA error: no kernel image is available\nmore"))
    assert env.pick_device() == torch.device("cpu")
    out = capsys.readouterr().out
    assert "a test operation on cuda:0 (NVIDIA Test GPU) failed" in out
    assert "RuntimeError: CUDA error: no kernel image is available" in out
    assert "more" not in out and out.count("\n") == 1


def test_pick_device_falls_back_when_the_cuda_queries_fail(gpu, monkeypatch, capsys):
    gpu()

    def broken(index=None):
        raise RuntimeError("CUDA driver initialization failed")

    monkeypatch.setattr(torch.cuda, "get_device_capability", broken)
    assert env.pick_device() == torch.device("cpu")
    assert "querying cuda:0 failed (RuntimeError: CUDA driver" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("capability", "arch_list", "expected"),
    [
        ((7, 5), ["sm_75"], True),
        ((8, 6), ["sm_80"], True),  # same major, newer minor: the sm_80 cubin runs
        ((8, 0), ["sm_86"], False),  # older minor than any cubin
        ((9, 0), ["sm_80"], False),  # another major, no PTX
        ((9, 0), ["sm_80", "compute_80"], True),  # PTX is compiled for newer GPUs
        ((7, 5), ["sm_80", "compute_80"], False),  # ... never for older ones
        ((9, 0), ["sm_90a"], True),  # architecture-specific: exactly 9.0
        ((10, 0), ["sm_90a"], False),
        ((12, 0), ["sm_90", "sm_100", "sm_120"], True),
        ((12, 1), ["sm_120"], True),
        ((6, 0), ["sm_70", "sm_75", "sm_80", "sm_90"], False),  # P100
        ((3, 7), ["sm_50", "compute_50"], False),  # K80: older than the PTX
        ((8, 0), [], True),  # a build that does not say: the test operation decides
    ],
)
def test_has_kernels_follows_the_sm_and_ptx_rules(capability, arch_list, expected):
    assert env.has_kernels(capability, arch_list) is expected


def test_explicit_cuda_requests_are_checked(gpu, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        env.pick_device("cuda")
    gpu(count=2)
    assert env.pick_device("cuda:1") == torch.device("cuda", 1)
    assert env.pick_device("cuda") == torch.device("cuda")
    with pytest.raises(ValueError, match=r"has 2 CUDA device\(s\) \(cuda:0 to cuda:1\)"):
        env.pick_device("cuda:2")
    gpu((6, 0), ("sm_70",), name="Tesla P100")
    with pytest.raises(ValueError, match=r"'cuda:0' cannot be used: Tesla P100 .* use 'cpu'"):
        env.pick_device("cuda:0")


def test_explicit_mps_and_unknown_requests_are_checked(monkeypatch):
    env.mps_problem.cache_clear()
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_built", lambda: False)
    try:
        with pytest.raises(ValueError, match=r"MPS is not available .*built without it"):
            env.pick_device("mps")
    finally:
        env.mps_problem.cache_clear()
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        env.pick_device("gpu")
    assert env.pick_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize(
    ("capability", "native", "expected"),
    [
        ((7, 5), False, "fp16-mixed"),
        ((8, 0), True, "bf16-mixed"),
        ((9, 0), True, "bf16-mixed"),
        ((6, 0), False, "fp16-mixed"),
    ],
)
def test_auto_precision_uses_bf16_only_where_it_is_native(gpu, capability, native, expected):
    """A T4 (7.5) emulates bf16, which torch's default ``is_bf16_supported()`` counts."""
    gpu(capability, ("sm_60", "sm_75", "sm_80", "sm_90"), bf16_native=native)
    assert torch.cuda.is_bf16_supported() is True  # the question that counts emulation
    assert env.auto_precision(torch.device("cuda")) == expected
    assert env.auto_precision("cuda:0") == expected


def test_auto_precision_without_the_emulation_argument_reads_the_capability(gpu, monkeypatch):
    gpu((7, 5))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)  # an older torch
    assert env.auto_precision("cuda") == "fp16-mixed"
    gpu((8, 9))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert env.auto_precision("cuda") == "bf16-mixed"


def test_auto_precision_off_cuda():
    assert env.auto_precision("cpu") == "fp32"
    assert env.auto_precision("cpu", cpu="bf16-mixed") == "bf16-mixed"
    assert env.auto_precision("cpu", cpu="bf16") == "bf16-mixed"  # an older name, canonicalised
    assert env.auto_precision("mps") == "fp32"


def test_the_trainer_resolves_auto_precision_through_env(gpu):
    from tinytrans.train import CPU_AUTO_PRECISION, resolve_precision

    gpu((7, 5), bf16_native=False)
    assert resolve_precision("auto", torch.device("cuda")) == "fp16-mixed"
    gpu((8, 0))
    assert resolve_precision("auto", torch.device("cuda")) == "bf16-mixed"
    assert resolve_precision("auto", torch.device("cpu")) == CPU_AUTO_PRECISION
    assert resolve_precision("bf16", torch.device("cuda")) == "bf16-mixed"
    assert resolve_precision("fp16-mixed", torch.device("cuda")) == "fp16-mixed"


def test_train_reexports_the_one_seed_everything():
    import tinytrans.train

    assert tinytrans.train.seed_everything is env.seed_everything


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
    for key in ("tinytrans", "torch", "python", "device", "precision (auto)"):
        assert key in out
    assert torch.__version__ in out
