"""Benchmark chapter 4's decoding tricks on the course model and write ``results/generate.json``.

Measures: KV-cache speed-up (128 and 512 new tokens), speculative decoding (acceptance and
speed-up), continuous vs static batching throughput, int8 dynamic quantization (size,
latency, perplexity), seed 004's latency/RSS budget (in a fresh subprocess) and tokens/s
against Hugging Face ``LlamaForCausalLM.generate`` on the same weights.

Run from the repository root::

    python benchmarks/bench_generate.py [--checkpoint PATH] [--quick]

Without ``--checkpoint`` the course model has random weights (speed does not depend on the
weights; acceptance rates and perplexities do -- see the notes in the result). Timings are
medians of alternating runs, so background load hits both sides of each ratio alike.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median, time_call, write_result

from tinytrans import generate as G
from tinytrans.evaluate import perplexity
from tinytrans.model import ModelConfig, TinyTransformer

# Public-domain text (Shakespeare, Sonnet 18 and Hamlet) for the perplexity comparison.
TEXT = (
    "Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:\n"
    "Rough winds do shake the darling buds of May,\nAnd summer's lease hath all too short a "
    "date;\nSometime too hot the eye of heaven shines,\nAnd often is his gold complexion "
    "dimm'd;\nAnd every fair from fair sometime declines,\nBy chance or nature's changing "
    "course untrimm'd;\n\nHAMLET:\nTo be, or not to be, that is the question:\nWhether 'tis "
    "nobler in the mind to suffer\nThe slings and arrows of outrageous fortune,\nOr to take "
    "arms against a sea of troubles\nAnd by opposing end them. To die: to sleep;\n"
)


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def load_model(checkpoint: str | None) -> tuple[TinyTransformer, Any, str]:
    """The course model from ``checkpoint``: a path, ``pretrained:NAME``, ``random``, or None
    (the shipped ``shakespeare-char`` model when the package has it, else random weights)."""
    if checkpoint is None:
        try:
            from tinytrans.pretrained import available
        except ImportError:
            available = list
        checkpoint = (
            "pretrained:shakespeare-char" if "shakespeare-char" in available() else "random"
        )
    if checkpoint.startswith("pretrained:"):
        from tinytrans.pretrained import load_pretrained

        model, tokenizer = load_pretrained(checkpoint.split(":", 1)[1])
        return model.eval(), tokenizer, checkpoint
    if checkpoint != "random":
        from tinytrans.train import load_checkpoint

        model, tokenizer, info = load_checkpoint(checkpoint)
        return model.eval(), tokenizer, f"checkpoint {checkpoint} (step {info.get('step')})"
    torch.manual_seed(0)  # untied: a random tied head just repeats the last token
    model = TinyTransformer(ModelConfig.preset("course", tie_embeddings=False)).eval()
    return model, None, "random weights (seed 0), untied head"


def with_context(model: TinyTransformer, context_length: int) -> TinyTransformer:
    """The same weights with a longer context (RoPE only: learned tables cannot grow)."""
    if model.config.context_length >= context_length:
        return model
    if model.config.positional == "learned":
        raise ValueError("learned positions cannot be extended")
    longer = TinyTransformer(model.config.replace(context_length=context_length)).eval()
    longer.load_state_dict(model.state_dict())
    return longer


def truncated(model: TinyTransformer, n_layers: int) -> TinyTransformer:
    """A draft model: the target's first ``n_layers`` blocks, its embedding and its head."""
    draft = TinyTransformer(model.config.replace(n_layers=n_layers)).eval()
    keep = {f"blocks.{i}." for i in range(n_layers)}
    state = {
        k: v
        for k, v in model.state_dict().items()
        if not k.startswith("blocks.") or any(k.startswith(p) for p in keep)
    }
    draft.load_state_dict(state)
    return draft


def prompt_ids(model: TinyTransformer, tokenizer: Any, length: int, seed: int = 0) -> list[int]:
    """``length`` prompt tokens: from TEXT when a tokenizer exists, else seeded random ids."""
    if tokenizer is not None:
        ids = tokenizer.encode(TEXT)
        start = (seed * 37) % max(1, len(ids) - length)
        return ids[start : start + length]
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.config.vocab_size, (length,), generator=g).tolist()


def alternate(fns: dict[str, Any], repeats: int, warmup: bool = True) -> dict[str, float]:
    """Median seconds of each function, run in alternation (after one warm-up each)."""
    for fn in fns.values() if warmup else ():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name] += time_call(fn, repeats=1, warmup=0)
    return {name: median(values) for name, values in times.items()}


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


def bench_kv_cache(model, tokenizer, quick: bool) -> dict[str, Any]:
    """Cache vs no-cache greedy decoding, in a context long enough not to slide."""
    prompt = prompt_ids(model, tokenizer, 16)
    try:
        long_model = with_context(model, 1024)
    except ValueError:  # learned positions: stay inside the native window
        long_model = model
    context = long_model.config.context_length
    out: dict[str, Any] = {"prompt_tokens": len(prompt), "context_length": context}
    for n in (128, 512):
        if len(prompt) + n > context:
            out[str(n)] = {"skipped": f"needs a context of {len(prompt) + n} tokens"}
            continue
        same = G.generate(long_model, None, prompt, n, temperature=0) == G.generate(
            long_model, None, prompt, n, temperature=0, use_cache=False
        )
        times = alternate(
            {
                "cache": lambda n=n: G.generate(long_model, None, prompt, n, temperature=0),
                "no_cache": lambda n=n: G.generate(
                    long_model, None, prompt, n, temperature=0, use_cache=False
                ),
            },
            repeats=1 if quick else (3 if n == 512 else 5),
            warmup=n < 512,  # the long runs are seconds each: first-call costs do not matter
        )
        out[str(n)] = {
            "cache_s": times["cache"],
            "no_cache_s": times["no_cache"],
            "speedup": times["no_cache"] / times["cache"],
            "cache_tokens_per_s": n / times["cache"],
            "identical_greedy_output": same,
        }
    out["sliding_window_native_context"] = bench_sliding(model, prompt, quick)
    return out


def bench_sliding(model, prompt, quick: bool) -> dict[str, Any]:
    """512 tokens in the native context: exact sliding re-prefills every step past the window."""
    n = 128 if quick else 512
    half = model.config.context_length // 2
    times = alternate(
        {
            "no_cache": lambda: G.generate(model, None, prompt, n, temperature=0, use_cache=False),
            "cache_exact": lambda: G.generate(model, None, prompt, n, temperature=0),
            "cache_keep_half": lambda: G.generate(
                model, None, prompt, n, temperature=0, crop_keep=half
            ),
        },
        repeats=1,
        warmup=False,
    )
    return {
        "new_tokens": n,
        "context_length": model.config.context_length,
        **{f"{k}_s": v for k, v in times.items()},
        "speedup_exact": times["no_cache"] / times["cache_exact"],
        "speedup_keep_half": times["no_cache"] / times["cache_keep_half"],
    }


def bench_speculative(model, tokenizer, quick: bool) -> dict[str, Any]:
    """Greedy speculative decoding with two drafts: the target's first layer, a random one."""
    n, k = (64 if quick else 128), 4
    prompt = prompt_ids(model, tokenizer, 16)
    reference = G.generate(model, None, prompt, n, temperature=0)
    torch.manual_seed(1)
    drafts = {
        "first_layer_of_target": truncated(model, 1),
        "first_2_layers_of_target": truncated(model, 2),
        "independent_random_1_layer": TinyTransformer(model.config.replace(n_layers=1)).eval(),
    }
    out: dict[str, Any] = {"new_tokens": n, "k": k}
    for name, draft in drafts.items():
        result = G.speculative_generate(model, draft, prompt, n, k=k)
        times = alternate(
            {
                "plain": lambda: G.generate(model, None, prompt, n, temperature=0),
                "speculative": lambda d=draft: G.speculative_generate(model, d, prompt, n, k=k),
            },
            repeats=1 if quick else 5,
        )
        out[name] = {
            "acceptance_rate": result.acceptance_rate,
            "tokens_per_target_call": result.tokens_per_target_call,
            "identical_to_target_greedy": result.ids == reference,
            "plain_s": times["plain"],
            "speculative_s": times["speculative"],
            "speedup": times["plain"] / times["speculative"],
        }
    return out


def workload(model, tokenizer, n_requests: int) -> list[tuple[list[int], int]]:
    """Mixed lengths: prompts of 4-48 tokens, outputs mostly short with a few long ones."""
    g = torch.Generator().manual_seed(42)
    choices = [8, 8, 16, 16, 24, 32, 48, 64, 128, 160]
    requests = []
    for i in range(n_requests):
        length = int(torch.randint(4, 49, (), generator=g))
        new = choices[int(torch.randint(0, len(choices), (), generator=g))]
        requests.append((prompt_ids(model, tokenizer, length, seed=i + 1), new))
    return requests


def static_batches(model, requests, slots: int) -> list[list[int]]:
    """Static batching: fixed groups, padded, each group runs until its longest request ends."""
    outputs = []
    for start in range(0, len(requests), slots):
        group = requests[start : start + slots]
        longest = max(n for _, n in group)
        results = G.generate_batch(model, [p for p, _ in group], longest)
        outputs += [r[:n] for r, (_, n) in zip(results, group, strict=True)]
    return outputs


def continuous(model, requests, slots: int) -> list[list[int]]:
    batcher = G.ContinuousBatcher(model, num_slots=slots)
    ids = [batcher.submit(p, n) for p, n in requests]
    results = batcher.run()
    return [results[i] for i in ids]


def bench_batching(model, tokenizer, quick: bool) -> dict[str, Any]:
    slots, requests = 4, workload(model, tokenizer, 12 if quick else 24)
    useful = sum(n for _, n in requests)
    same = static_batches(model, requests, slots) == continuous(model, requests, slots)
    times = alternate(
        {
            "static": lambda: static_batches(model, requests, slots),
            "continuous": lambda: continuous(model, requests, slots),
        },
        repeats=1 if quick else 3,
    )
    return {
        "slots": slots,
        "requests": len(requests),
        "useful_tokens": useful,
        "static_tokens_per_s": useful / times["static"],
        "continuous_tokens_per_s": useful / times["continuous"],
        "throughput_ratio": times["static"] / times["continuous"],
        "identical_outputs": same,
    }


def bench_int8(model, tokenizer, quick: bool) -> dict[str, Any]:
    quantized = G.quantize_int8(model)
    prompt = prompt_ids(model, tokenizer, 16)
    text_ids = tokenizer.encode(TEXT) if tokenizer is not None else prompt_ids(model, None, 600, 9)
    n = 64
    times = alternate(
        {
            "fp32": lambda: G.generate(model, None, prompt, n, temperature=0),
            "int8": lambda: G.generate(quantized, None, prompt, n, temperature=0),
        },
        repeats=1 if quick else 5,
    )
    chunked = model.config.context_length  # disjoint windows, as the report has always used
    ppl = perplexity(model, text_ids, stride=chunked)
    ppl_q = perplexity(quantized, text_ids, stride=chunked)
    fp32_bytes, int8_bytes = G.state_dict_bytes(model), G.state_dict_bytes(quantized)
    agree = G.generate(model, None, prompt, n, temperature=0) == G.generate(
        quantized, None, prompt, n, temperature=0
    )
    return {
        "fp32_bytes": fp32_bytes,
        "int8_bytes": int8_bytes,
        "size_ratio": fp32_bytes / int8_bytes,
        "fp32_ms_per_token": times["fp32"] / n * 1000,
        "int8_ms_per_token": times["int8"] / n * 1000,
        "latency_ratio_int8_over_fp32": times["int8"] / times["fp32"],
        "perplexity_text": "Shakespeare excerpt" if tokenizer is not None else "random ids",
        "fp32_perplexity": ppl,
        "int8_perplexity": ppl_q,
        "perplexity_change_pct": 100 * (ppl_q - ppl) / ppl,
        "greedy_64_tokens_identical": agree,
    }


def latency_child(checkpoint: str | None, int8: bool) -> None:
    """Runs in a fresh process: 100 prompts x 20 tokens, then print the profile and peak RSS."""
    model, tokenizer, _ = load_model(checkpoint)
    if int8:
        model = G.quantize_int8(model)
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(8, 65, (100,), generator=g).tolist()
    prompts = [prompt_ids(model, tokenizer, n, seed=i) for i, n in enumerate(lengths)]
    sampling = G.SamplingConfig(temperature=0.8, top_k=40)
    profile = G.latency_profile(model, prompts, 20, sampling=sampling, warmup=3)
    print(json.dumps({**profile, "peak_rss_mb": G.peak_rss_mb()}))


def bench_latency(checkpoint: str | None, threads: int) -> dict[str, Any]:
    """Seed 004's budget check, each variant in a fresh process so RSS is its own."""
    out = {}
    for variant in ("fp32", "int8"):
        cmd = [sys.executable, __file__, "--latency-child", variant, "--threads", str(threads)]
        if checkpoint:
            cmd += ["--checkpoint", checkpoint]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        profile = json.loads(done.stdout.strip().splitlines()[-1])
        out[variant] = {**profile, "budget": G.check_budget(profile, profile["peak_rss_mb"])}
    return out


def hf_model(model: TinyTransformer):
    """``LlamaForCausalLM`` with the same weights (tinytrans.interop if present)."""
    try:
        from tinytrans.interop import to_hf

        hf = to_hf(model)
    except ImportError:
        hf = _hf_by_hand(model)
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    return hf.eval()


def _hf_by_hand(model: TinyTransformer):
    from transformers import LlamaConfig, LlamaForCausalLM

    c = model.config
    hf = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=c.vocab_size, hidden_size=c.d_model, intermediate_size=c.d_ff,
            num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads,
            num_key_value_heads=c.kv_heads, max_position_embeddings=c.context_length,
            rms_norm_eps=c.norm_eps, tie_word_embeddings=c.tie_embeddings,
            rope_theta=c.rope_theta, eos_token_id=None, bos_token_id=None,
        )
    )  # fmt: skip
    names = {
        "tok_emb.weight": "model.embed_tokens.weight",
        "final_norm.weight": "model.norm.weight",
    }
    names["lm_head.weight"] = "lm_head.weight"
    for i in range(c.n_layers):
        b, h = f"blocks.{i}.", f"model.layers.{i}."
        names |= {b + "attn_norm.weight": h + "input_layernorm.weight"}
        names |= {b + "ffn_norm.weight": h + "post_attention_layernorm.weight"}
        for p in ("q_proj", "k_proj", "v_proj", "o_proj"):
            names[f"{b}attn.{p}.weight"] = f"{h}self_attn.{p}.weight"
        for p in ("gate_proj", "up_proj", "down_proj"):
            names[f"{b}ffn.{p}.weight"] = f"{h}mlp.{p}.weight"
    hf.load_state_dict({names[k]: v for k, v in model.state_dict().items()}, strict=False)
    return hf


def bench_hf(model, tokenizer, quick: bool) -> dict[str, Any]:
    n = 64 if quick else 128
    prompt = prompt_ids(model, tokenizer, 16)
    hf = hf_model(model)
    idx = torch.tensor([prompt])
    mask = torch.ones_like(idx)

    def run_hf() -> list[int]:
        with torch.inference_mode():
            out = hf.generate(idx, attention_mask=mask, max_new_tokens=n, do_sample=False)
        return out[0, len(prompt) :].tolist()

    ours = G.generate(model, None, prompt, n, temperature=0)
    same = run_hf() == ours
    times = alternate(
        {"ours": lambda: G.generate(model, None, prompt, n, temperature=0), "hf": run_hf},
        repeats=1 if quick else 5,
    )
    return {
        "new_tokens": n,
        "ours_tokens_per_s": n / times["ours"],
        "hf_tokens_per_s": n / times["hf"],
        "ratio_ours_over_hf": times["hf"] / times["ours"],
        "identical_greedy_output": same,
        "hf": "LlamaForCausalLM.generate(do_sample=False), same weights, sdpa attention",
    }


def goals(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, read off the measured sections (missing sections are skipped)."""
    out = []
    kv = payload.get("kv_cache", {}).get("512") or payload.get("kv_cache", {}).get(512)
    if kv and "speedup" in kv:
        out.append(
            {
                "name": "KV-cache speed-up at 512 new tokens",
                "target": ">= 5x",
                "value": round(kv["speedup"], 2),
                "met": kv["speedup"] >= 5.0,
            }
        )
    hf = payload.get("hf_comparison")
    if hf:
        ratio = hf["ratio_ours_over_hf"]
        out.append(
            {
                "name": "generation tokens/s, tinytrans / HF generate (same weights)",
                "target": ">= 1.0x",
                "value": round(ratio, 3),
                "met": ratio >= 1.0,
            }
        )
    for variant, profile in payload.get("latency_budget", {}).items():
        if not isinstance(profile, dict) or "budget" not in profile:
            continue  # e.g. section_seconds
        budget = profile["budget"]
        out.append(
            {
                "name": f"{variant}: p95 latency, 20 new tokens, 100 prompts",
                "target": f"<= {budget['p95_budget_ms']} ms",
                "value": round(budget["p95_ms"], 1),
                "met": budget["p95_ok"],
            }
        )
        out.append(
            {
                "name": f"{variant}: peak RSS",
                "target": f"<= {budget['rss_budget_mb']} MB",
                "value": round(budget["rss_mb"], 1),
                "met": budget["rss_ok"],
            }
        )
    return out


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="checkpoint path, pretrained:NAME or random (default: shipped model, else random)",
    )
    parser.add_argument("--quick", action="store_true", help="fewer tokens and repeats")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 avoids oversubscription)"
    )
    parser.add_argument("--latency-child", choices=["fp32", "int8"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.latency_child:
        latency_child(args.checkpoint, args.latency_child == "int8")
        return {}
    model, tokenizer, source = load_model(args.checkpoint)
    payload: dict[str, Any] = {
        "model": model.config.name,
        "parameters": model.num_parameters(),
        "weights": source,
        "threads": torch.get_num_threads(),
        "notes": [
            "Timings are medians of alternating runs on a shared 2-core CPU. One torch thread: "
            "with other jobs running, two OpenMP threads were up to 10x slower per token.",
            "KV-cache rows use context_length=1024 (same weights, RoPE) so 512 new tokens do "
            "not slide; sliding_window_native_context shows the native 256 window.",
            "With random weights a truncated draft agrees with the target more often than a "
            "trained pair would; an independent random draft agrees rarely.",
        ],
    }
    sections = {
        "kv_cache": lambda: bench_kv_cache(model, tokenizer, args.quick),
        "speculative": lambda: bench_speculative(model, tokenizer, args.quick),
        "continuous_batching": lambda: bench_batching(model, tokenizer, args.quick),
        "int8": lambda: bench_int8(model, tokenizer, args.quick),
        "latency_budget": lambda: bench_latency(args.checkpoint, args.threads),
        "hf_comparison": lambda: bench_hf(model, tokenizer, args.quick),
    }
    for name, section in sections.items():
        start = time.perf_counter()
        payload[name] = section()
        payload[name]["section_seconds"] = time.perf_counter() - start
        print(f"{name}: {json.dumps(payload[name], default=str)}", flush=True)
    payload["goals"] = goals(payload)
    path = write_result("generate", payload)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
