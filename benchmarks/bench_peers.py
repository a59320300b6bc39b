"""Training-step throughput of tinytrans against Hugging Face Llama and GPT-2 on this CPU.

Each case builds a tinytrans model, copies its exact weights into the Hugging Face peer with
:func:`tinytrans.interop.to_hf`, and times one full training step (forward, loss, backward,
AdamW update) on identical batches. The two models (and a 1024^3 fp32 matmul that measures
the machine's peak) alternate within every round, so background load hits them alike; we
report medians, the ratio tinytrans/peer (> 1 means tinytrans is faster) and model FLOP
utilisation (MFU): chapter 5's training FLOPs per token
(``tinytrans.sizing.training_flops_per_token`` at the batch's sequence length: 3 x (2 N_matmul
+ 2 L T d), attention charged for its causal half), over the peak.

Cases: the course model against ``LlamaForCausalLM``; its GPT-2-style twin against
``GPT2LMHeadModel`` as GPT-2 ships (``gelu_new``, a Python-level tanh GELU) and with HF's
fused ``gelu_pytorch_tanh`` (the same function); a grouped-query Llama. A torch.profiler
breakdown (share of CPU time per op group) explains where each side spends its step.

Run from the repository root: ``python benchmarks/bench_peers.py`` (about 2 minutes).
Needs ``transformers``. Writes ``benchmarks/results/peers.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import FLOPS_CONVENTION, measure_matmul_peak, median, write_result

from tinytrans import sizing
from tinytrans.interop import HF_CLASSES, config_to_hf, state_dict_to_hf, to_hf
from tinytrans.model import ModelConfig, TinyTransformer

GOAL_RATIO = 1.0  # tinytrans at least as fast as its peer
GOAL_MFU = 0.5  # at least half of the measured matmul peak on the course model
MIN_ROUNDS = 5


@dataclass
class Case:
    """One comparison: a tinytrans config, its peer family and the batch shape."""

    name: str
    config: ModelConfig
    batch: int
    seq_len: int
    hf_overrides: dict[str, Any] = field(default_factory=dict)  # HF config fields to change

    @property
    def peer(self) -> str:
        return "LlamaForCausalLM" if self.config.positional == "rope" else "GPT2LMHeadModel"


def cases() -> list[Case]:
    """The course model (Llama-style), its GPT-2-style twin, and a grouped-query Llama."""
    gqa = ModelConfig(
        vocab_size=2048, context_length=256, d_model=256, n_layers=4, n_heads=8, n_kv_heads=2,
        d_ff=688, positional="rope", norm="rmsnorm", activation="swiglu", name="llama-gqa",
    )  # fmt: skip
    gpt2 = ModelConfig.preset("course-gpt2")
    return [
        Case("course (Llama-style)", ModelConfig.preset("course"), batch=8, seq_len=256),
        Case("course-gpt2 (GPT-2-style)", gpt2, batch=8, seq_len=256),
        Case(
            "course-gpt2, HF with fused gelu_pytorch_tanh",
            gpt2,
            batch=8,
            seq_len=256,
            hf_overrides={"activation_function": "gelu_pytorch_tanh"},
        ),
        Case("llama-gqa (8 query / 2 kv heads)", gqa, batch=4, seq_len=256),
    ]


def train_step(model: nn.Module, loss_of: Callable[[], torch.Tensor]) -> Callable[[], None]:
    """A closure running one AdamW training step of ``model``."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_of().backward()
        optimizer.step()

    return step


def hf_peer(ours: TinyTransformer, overrides: dict[str, Any]) -> nn.Module:
    """The HF copy of ``ours``; ``overrides`` change its config (same weights, same maths)."""
    if not overrides:
        return to_hf(ours, attn_implementation="sdpa")
    import transformers

    hf_config = config_to_hf(ours.config, attn_implementation="sdpa")
    for key, value in overrides.items():
        setattr(hf_config, key, value)
    peer = getattr(transformers, HF_CLASSES[hf_config.model_type])(hf_config)
    peer.load_state_dict(state_dict_to_hf(ours.state_dict(), ours.config))
    return peer


def build_pair(case: Case) -> tuple[Callable[[], None], Callable[[], None], TinyTransformer]:
    """Training steps of tinytrans and of its HF peer, same weights, same batch."""
    torch.manual_seed(0)
    ours = TinyTransformer(case.config).train()
    peer = hf_peer(ours, case.hf_overrides).train()
    x = torch.randint(0, case.config.vocab_size, (case.batch, case.seq_len))
    y = torch.roll(x, -1, dims=1)  # our targets; HF shifts its labels=x internally: same work
    ours_step = train_step(ours, lambda: ours(x, y)[1])
    peer_step = train_step(peer, lambda: peer(input_ids=x, labels=x).loss)
    return ours_step, peer_step, ours


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(case: Case, rounds: int, warmup: int, budget_s: float) -> dict[str, Any]:
    """Alternate tinytrans, peer and a peak matmul for ``rounds`` (fewer, but at least
    ``MIN_ROUNDS``, once ``budget_s`` is spent); medians and derived rates."""
    ours_step, peer_step, ours = build_pair(case)
    for _ in range(warmup):
        ours_step(), peer_step()
    times: dict[str, list[float]] = {"tinytrans": [], "peer": []}
    peaks: list[float] = []
    start = time.perf_counter()
    for r in range(rounds):
        if r >= MIN_ROUNDS and time.perf_counter() - start > budget_s:
            break
        order = [("tinytrans", ours_step), ("peer", peer_step)]
        for side, step in order if r % 2 == 0 else order[::-1]:
            times[side].append(timed(step))
        peaks.append(measure_matmul_peak(repeats=3))
    tokens = case.batch * case.seq_len
    per_token = sizing.training_flops_per_token(case.config, case.seq_len)
    palm = sizing.training_flops_per_token(case.config, case.seq_len, attention="full")
    peak = median(peaks)
    sides = {}
    for side, values in times.items():
        step_s = median(values)
        sides[side] = {
            "step_s_median": step_s,
            "tokens_per_s": tokens / step_s,
            "model_flops_per_s": per_token * tokens / step_s,
            "mfu": per_token * tokens / step_s / peak,
            # Least-disturbed step against the best peak: what a quiet machine would show.
            "tokens_per_s_best": tokens / min(values),
            "mfu_best": per_token * tokens / min(values) / max(peaks),
        }
    return {
        "case": case.name,
        "peer": case.peer,
        "hf_overrides": case.hf_overrides or None,
        "config": case.config.name,
        "batch": case.batch,
        "seq_len": case.seq_len,
        "parameters": ours.num_parameters(),
        "flops_per_token": per_token,
        # PaLM's basis (the full T x T square), for comparing with MFUs published on it.
        "flops_per_token_full_attention": palm,
        "rounds": len(peaks),
        "peak_flops_per_s": peak,
        "tinytrans": sides["tinytrans"],
        "hf": sides["peer"],
        "ratio": sides["tinytrans"]["tokens_per_s"] / sides["peer"]["tokens_per_s"],
        "ratio_paired_median": median(
            [p / o for o, p in zip(times["tinytrans"], times["peer"], strict=True)]
        ),
    }


PROFILE_GROUPS = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear"),
    "attention (SDPA)": ("scaled_dot_product",),
    "optimizer": ("Optimizer.", "aten::_foreach", "aten::lerp", "aten::addc", "aten::sqrt"),
}


def profile_breakdown(case: Case, steps: int = 2) -> dict[str, dict[str, float]]:
    """Share of self CPU time per op group (matmul, attention, elementwise...) for both sides."""
    from torch.profiler import ProfilerActivity, profile

    ours_step, peer_step, _ = build_pair(case)
    sides = {"tinytrans": ours_step, "hf": peer_step}
    groups: dict[str, dict[str, float]] = {side: {} for side in sides}
    for step in sides.values():
        step()
    for _ in range(steps):  # alternate, one profiled step at a time
        for side, step in sides.items():
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                step()
            for event in prof.key_averages():
                group = op_group(event.key)
                groups[side][group] = groups[side].get(group, 0.0) + event.self_cpu_time_total
    out = {}
    for side, times in groups.items():
        total = sum(times.values()) or 1.0
        out[side] = {g: round(v / total, 4) for g, v in sorted(times.items())}
        out[side]["total_ms_per_step"] = round(total / 1000 / steps, 2)
    return out


def op_group(name: str) -> str:
    return next(
        (g for g, keys in PROFILE_GROUPS.items() if any(k in name for k in keys)),
        "elementwise/copies/other",
    )


def goals(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and whether it was met."""
    out = []
    for r in results:
        out.append(
            {
                "name": f"tinytrans/{r['peer']} training throughput, {r['case']}",
                "target": f">= {GOAL_RATIO:.1f}x",
                "value": round(r["ratio"], 3),
                "met": r["ratio"] >= GOAL_RATIO,
            }
        )
    course = results[0]
    out.append(
        {
            "name": "tinytrans MFU on the course model (fraction of measured fp32 matmul peak)",
            "target": f">= {GOAL_MFU:.0%}",
            "value": round(course["tinytrans"]["mfu"], 3),
            "met": course["tinytrans"]["mfu"] >= GOAL_MFU,
        }
    )
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="timed steps per side per case")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--budget-seconds", type=float, default=120, help="timing budget over all cases"
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the op breakdown")
    args = parser.parse_args(argv)
    results, profiles = [], {}
    load_before = os.getloadavg()[0]
    all_cases = cases()
    for case in all_cases:
        result = measure(case, args.rounds, args.warmup, args.budget_seconds / len(all_cases))
        results.append(result)
        print(
            f"{case.name:34s} tinytrans {result['tinytrans']['tokens_per_s']:8.0f} tok/s "
            f"({result['tinytrans']['mfu']:.0%} MFU)  {case.peer} "
            f"{result['hf']['tokens_per_s']:8.0f} tok/s ({result['hf']['mfu']:.0%})  "
            f"ratio {result['ratio']:.2f}x",
            flush=True,
        )
        if not args.no_profile and not case.hf_overrides:
            profiles[case.name] = profile_breakdown(case)
    payload = {
        "description": "Training step (forward + backward + AdamW) throughput, tinytrans vs "
        "Hugging Face at identical configs, weights and batches; medians of alternated runs.",
        "flops_convention": FLOPS_CONVENTION,
        "peak_flops_per_s": median([r["peak_flops_per_s"] for r in results]),
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "load_note": "other processes share this CPU when load_average_1min exceeds the "
        "core count; ratios (alternated, paired) stay meaningful, absolute rates drop",
        "goals": goals(results),
        "cases": results,
        "configs": {c.config.name: c.config.to_dict() for c in all_cases},
        "profile_share_of_cpu_time": profiles,
    }
    print(f"wrote {write_result('peers', payload)}")
    return payload


if __name__ == "__main__":
    main()
