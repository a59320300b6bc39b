"""Tests for the inference, ZeRO and cost parts of tinytrans.sizing (sections 5.9-5.11).

The roofline is checked against hand derivations (the critical batch ``peak / bandwidth x
bytes / 2``, Rajbhandari et al.'s ZeRO table), the hardware table against the older
``PEAK_TFLOPS`` names its users rely on, and the measurements only for being sane numbers
(no timed assertions).
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinytrans import sizing as S
from tinytrans.model import ModelConfig, preset_names

pytestmark = pytest.mark.usefixtures("one_thread")

LLAMA7B = ModelConfig.preset("llama2-7b")


def test_peak_tflops_is_a_view_of_the_hardware_table():
    assert S.PEAK_TFLOPS == {
        "V100 (fp16 tensor)": 125.0,
        "A100 (bf16 tensor)": 312.0,
        "H100 SXM (bf16 tensor)": 989.0,
        "RTX 3090 (fp32)": 35.6,
        "RTX 3090 (fp16 tensor)": 71.0,
    }
    assert S.PEAK_TFLOPS["A100 (bf16 tensor)"] == S.HARDWARE["A100-40GB"].peak_tflops["bf16"]


def test_hardware_table_covers_the_briefs_devices():
    for name in ("A100-40GB", "A100-80GB", "H100-SXM", "V100", "T4", "L4", "RTX-4090", "M2",
                 "Pi-Zero-2W"):  # fmt: skip
        hw = S.HARDWARE[name]
        assert hw.name == name and hw.bandwidth > 0 and hw.memory_bytes > 0 and hw.source
        assert all(peak > 0 for peak in hw.peak_tflops.values())
    assert S.HARDWARE["A100-80GB"].bandwidth == 2.039e12
    assert S.HARDWARE["Pi-Zero-2W"].memory_bytes == 512 * 2**20


def test_hardware_errors_name_the_choices():
    with pytest.raises(ValueError, match="A100-80GB"):
        S.get_hardware("A100")
    with pytest.raises(ValueError, match="fp16"):
        S.HARDWARE["T4"].peak_flops("bf16")
    assert S.get_hardware(S.HARDWARE["T4"]) is S.HARDWARE["T4"]
    assert S.HARDWARE["T4"].peak_flops("float16") == 65e12


def test_matmul_parameters_are_what_forward_flops_count():
    for name in preset_names():
        config = ModelConfig.preset(name)
        assert S.forward_flops_per_token(config, attention="none") == 2 * S.matmul_parameters(
            config
        )


def test_decode_step_at_batch_one_is_memory_bound_and_reads_the_weights():
    step = S.decode_step(LLAMA7B, "A100-80GB", 1, 0, "bf16")
    assert step.bound == "memory" and step.tokens == 1
    assert step.bytes == 2 * S.matmul_parameters(LLAMA7B)
    assert step.memory_seconds == pytest.approx(step.bytes / 2.039e12)
    assert step.seconds == step.memory_seconds
    assert step.arithmetic_intensity == pytest.approx(1.0)  # 2 FLOPs per 2-byte weight
    with_cache = S.decode_step(LLAMA7B, "A100-80GB", 1, 1000, "bf16")
    assert with_cache.bytes - step.bytes == S.kv_cache_bytes(LLAMA7B, 1, 1000, "bf16")
    assert with_cache.flops - step.flops == 4 * LLAMA7B.n_layers * 1000 * LLAMA7B.d_model


def test_overhead_adds_to_the_roofline():
    bare = S.decode_step(LLAMA7B, "T4", 1, 10, "fp16")
    slow = S.decode_step(LLAMA7B, "T4", 1, 10, "fp16", overhead_seconds=0.01)
    assert slow.seconds == pytest.approx(bare.seconds + 0.01)
    with pytest.raises(ValueError, match="overhead"):
        S.decode_step(LLAMA7B, "T4", overhead_seconds=-1)
    with pytest.raises(ValueError, match="batch_size"):
        S.decode_step(LLAMA7B, "T4", 0)


def test_prefill_is_compute_bound_and_much_faster_per_token():
    prefill = S.prefill_step(LLAMA7B, "A100-80GB", 1, 512)
    decode = S.decode_step(LLAMA7B, "A100-80GB", 1, 512)
    assert prefill.bound == "compute" and prefill.tokens == 512
    assert prefill.flops == 512 * S.forward_flops_per_token(LLAMA7B, 512)
    assert prefill.tokens_per_second > 50 * decode.tokens_per_second


@pytest.mark.parametrize("hardware", ["A100-40GB", "A100-80GB", "H100-SXM", "L4"])
@pytest.mark.parametrize("dtype", ["bf16", "int8"])
def test_critical_batch_without_cache_is_peak_over_bandwidth_times_bytes_over_two(hardware, dtype):
    hw = S.HARDWARE[hardware]
    expected = hw.peak_flops("bf16") / hw.bandwidth * S.dtype_bytes(dtype) / 2
    if dtype == "int8":  # int8 weights still multiply at the int8 peak
        expected = hw.peak_flops("int8") / hw.bandwidth * 1 / 2
    assert S.critical_batch_size(LLAMA7B, hw, dtype) == pytest.approx(expected, rel=1e-12)


def test_critical_batch_is_where_decode_turns_compute_bound():
    config = ModelConfig.preset("tinyllama-1.1b")
    b = S.critical_batch_size(config, "A100-80GB", "bf16", context_length=64)
    below = S.decode_step(config, "A100-80GB", math.floor(b), 64)
    above = S.decode_step(config, "A100-80GB", math.ceil(b) + 1, 64)
    assert below.bound == "memory" and above.bound == "compute"
    # A long multi-head cache is read at one FLOP per byte: no batch is compute-bound.
    assert S.critical_batch_size(LLAMA7B, "A100-80GB", "bf16", 4096) == math.inf


def test_measurements_are_positive_rates():
    bandwidth = S.measure_memory_bandwidth(2**20, repeats=2)
    flops = S.measure_matmul_flops(64, repeats=2)
    assert math.isfinite(bandwidth) and bandwidth > 1e6
    assert math.isfinite(flops) and flops > 1e6
    with pytest.raises(ValueError, match="repeats"):
        S.measure_memory_bandwidth(repeats=0)


# --------------------------------------------------------------------------------------------
# ZeRO
# --------------------------------------------------------------------------------------------

#: Rajbhandari et al. (2020), Figure 1: 7.5B parameters, 2 + 2 + K bytes with K = 12, N = 64.
PSI = 7_500_000_000
PAPER = S.TrainingMemory(
    weights=2 * PSI, gradients=2 * PSI, optimizer=8 * PSI, master_weights=4 * PSI, activations=0
)


@pytest.mark.parametrize(("stage", "gigabytes"), [(0, 120.0), (1, 31.4), (2, 16.6), (3, 1.88)])
def test_zero_reproduces_the_papers_figure_1(stage, gigabytes):
    per_device = S.zero_memory(PAPER, 64, stage)
    assert per_device.states / 1e9 == pytest.approx(gigabytes, abs=0.05)


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 1024), activations=st.integers(0, 10**9))
def test_zero_stage_3_divides_all_model_states(n, activations):
    memory = S.training_memory(ModelConfig.preset("llama-40m"), 2, 128, "bf16-mixed")
    memory = S.TrainingMemory(
        memory.weights, memory.gradients, memory.optimizer, memory.master_weights, activations
    )
    staged = [S.zero_memory(memory, n, stage) for stage in range(4)]
    assert staged[0] == memory
    assert [s.states for s in staged] == sorted((s.states for s in staged), reverse=True)
    assert staged[3].states == pytest.approx(memory.states / n, abs=4)
    assert all(s.activations == memory.activations for s in staged)


def test_zero_errors():
    with pytest.raises(ValueError, match="stage"):
        S.zero_memory(PAPER, 8, 4)
    with pytest.raises(ValueError, match="n_devices"):
        S.zero_memory(PAPER, 0, 1)


# --------------------------------------------------------------------------------------------
# Cost
# --------------------------------------------------------------------------------------------


def test_training_cost_and_its_inverse():
    flops = S.training_flops(LLAMA7B, 2e12)
    cost = S.training_cost(flops, "A100-80GB", 2.0, mfu=0.4)
    assert cost.gpu_hours == pytest.approx(flops / (312e12 * 0.4) / 3600)
    assert cost.dollars == pytest.approx(2.0 * cost.gpu_hours)
    assert S.affordable_flops(cost.dollars, "A100-80GB", 2.0, mfu=0.4) == pytest.approx(flops)
    # Seed 002: $100 at $0.75 per T4-hour buys 133 hours.
    t4 = S.training_cost(S.affordable_flops(100, "T4", 0.75, dtype="fp16"), "T4", 0.75,
                         dtype="fp16")  # fmt: skip
    assert t4.gpu_hours == pytest.approx(133.33, abs=0.01)
    with pytest.raises(ValueError, match="price"):
        S.training_cost(1e18, "T4", -1, dtype="fp16")


# --------------------------------------------------------------------------------------------
# The CLI's decode table
# --------------------------------------------------------------------------------------------


def test_size_prints_the_decode_roofline(capsys):
    from tinytrans.cli import main

    assert main(["size", "llama2-7b", "--hardware", "L4", "--precision", "bf16-mixed",
                 "--batch-size", "4"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "decode roofline (L4, bf16, no overhead)" in text
    single = S.decode_step(LLAMA7B, "L4", 1, LLAMA7B.context_length, "bf16")
    assert f"{single.tokens_per_second:,.0f} tokens/s" in text
    assert "decode, batch 4 after 4096" in text and "critical batch, no cache      403" in text
    assert main(["size", "course", "--hardware", "nope"]) != 0
    assert "unknown hardware 'nope'" in capsys.readouterr().err


def test_measured_hardware_feeds_the_roofline():
    here = S.measured_hardware("here")
    assert here.source == "measured" and set(here.peak_tflops) == {"fp32"}
    step = S.decode_step(ModelConfig.preset("course"), here, 1, 8, "fp32")
    assert step.seconds > 0 and step.bound in ("compute", "memory")


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(["course", "tinyllama-1.1b", "llama2-7b"]),
    hardware=st.sampled_from(list(S.HARDWARE)),
    batch=st.integers(1, 512),
    context=st.integers(0, 2048),
)
def test_decode_time_grows_with_batch_and_context(name, hardware, batch, context):
    config, hw = ModelConfig.preset(name), S.HARDWARE[hardware]
    dtype = next(d for d in ("bf16", "fp16", "fp32") if d in hw.peak_tflops)
    step = S.decode_step(config, hw, batch, context, dtype)
    assert S.decode_step(config, hw, batch + 1, context, dtype).seconds >= step.seconds
    assert S.decode_step(config, hw, batch, context + 1, dtype).seconds >= step.seconds
    critical = S.critical_batch_size(config, hw, dtype, context)
    assert step.bound == ("compute" if batch >= critical else "memory") or math.isclose(
        batch, critical, rel_tol=1e-9
    )


def test_matmul_measurement_names_the_dtypes_it_can_time():
    assert S.measure_matmul_flops(32, repeats=1, dtype="bf16") > 0
    with pytest.raises(ValueError, match="fp32"):
        S.measure_matmul_flops(32, dtype="int8")
