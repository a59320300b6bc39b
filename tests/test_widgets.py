"""Tests for tinytrans.widgets: the data layer, the HTML/figure renderers, the static
explorables and the live ipywidgets shells (driven without a kernel).

The browser test (tests/test_browser.py) drives the same explorables in Chromium; here the
JavaScript ports are also checked against Python with Node.js when it is installed.
"""

from __future__ import annotations

import ast
import base64
import itertools
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tinytrans import sizing
from tinytrans import widgets as W
from tinytrans.generate import SamplingConfig, filter_stages, step_distributions
from tinytrans.model import ModelConfig, TinyTransformer
from tinytrans.precision import PRECISIONS
from tinytrans.tokenizers import CharTokenizer
from tinytrans.widgets import data as D
from tinytrans.widgets import live, render, static

ALPHABET = "\n !',-.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ASSETS = Path(W.__file__).parent / "assets"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread (and don't fight other processes for cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tok() -> CharTokenizer:
    return CharTokenizer(ALPHABET)


def tiny_model(vocab: int, seed: int = 0, sharpen: float = 1.0, **overrides) -> TinyTransformer:
    """A small random model; ``sharpen`` scales the output head so distributions are peaked."""
    torch.manual_seed(seed)
    config = ModelConfig(
        vocab_size=vocab, context_length=64, d_model=32, n_layers=2, n_heads=4, d_ff=64,
        **overrides,
    )  # fmt: skip
    model = TinyTransformer(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(sharpen)
    return model


@pytest.fixture(scope="module")
def model(tok) -> TinyTransformer:
    return tiny_model(tok.vocab_size, sharpen=30.0, tie_embeddings=False)


# ============================================================================ attention data


def test_attention_rows_sum_to_one_with_zero_upper_triangle(model, tok):
    record = D.capture_attention(model, tok, "To be, or not to be", max_tokens=16)
    L, H, T, _ = record.weights.shape
    assert (L, H, T) == (2, 4, 16) and record.tokens[2] == "\u2423"  # visible space
    np.testing.assert_allclose(record.weights.sum(-1), 1.0, atol=1e-5)
    assert np.all(record.weights[..., np.triu_indices(T, 1)[0], np.triu_indices(T, 1)[1]] == 0)
    for key in ("entropy", "previous", "first", "induction"):
        assert record.stats[key].shape == (L, H)


@pytest.mark.parametrize("positional", ["learned", "rope"])
def test_attention_equals_softmax_of_scaled_dot_products_by_hand(tok, positional):
    from tinytrans.model import apply_rotary

    model = tiny_model(tok.vocab_size, seed=3, positional=positional)
    ids = tok.encode("the cat sat")
    record = D.capture_attention(model, tok, "the cat sat")
    T, block = len(ids), model.blocks[0]
    with torch.no_grad():
        x = model.tok_emb(torch.tensor([ids]))
        if positional == "learned":
            x = x + model.pos_emb(torch.arange(T))
        h = block.attn_norm(x)
        q = block.attn.q_proj(h).view(1, T, 4, 8).transpose(1, 2)
        k = block.attn.k_proj(h).view(1, T, 4, 8).transpose(1, 2)
        if positional == "rope":
            cos, sin = model.rope(torch.arange(T))
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        scores = (q @ k.transpose(-1, -2))[0] / math.sqrt(8)
        mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
        weights = scores.masked_fill(mask, float("-inf")).softmax(-1)
    np.testing.assert_allclose(record.scores[0], scores.numpy(), atol=1e-5)
    np.testing.assert_allclose(record.weights[0], weights.numpy(), atol=1e-6)


def test_head_statistics_by_hand():
    T = 6
    previous = np.zeros((1, 1, T, T), dtype=np.float32)
    previous[0, 0, 0, 0] = 1
    for t in range(1, T):
        previous[0, 0, t, t - 1] = 1
    uniform = np.tril(np.ones((T, T), dtype=np.float32))
    uniform = (uniform / uniform.sum(-1, keepdims=True))[None, None]
    stats = D.head_statistics(np.concatenate([previous, uniform], axis=1))
    assert stats["previous"][0, 0] == pytest.approx(1.0)
    assert stats["entropy"][0, 0] == pytest.approx(0.0)
    assert stats["first"][0, 0] == pytest.approx(1 / (T - 1))  # only query 1 looks at token 0
    expected = np.mean([math.log(t + 1) for t in range(1, T)])
    assert stats["entropy"][0, 1] == pytest.approx(expected, rel=1e-6)
    assert stats["first"][0, 1] == pytest.approx(np.mean([1 / (t + 1) for t in range(1, T)]))
    assert np.isnan(D.head_statistics(np.ones((2, 3, 1, 1)))["entropy"]).all()


class _InductionModel:
    """A stand-in model: layer 1 head 2 is a perfect induction head, others uniform."""

    def __init__(self) -> None:
        self.config = ModelConfig(vocab_size=20, context_length=16, d_model=24, n_layers=2,
                                  n_heads=3, d_ff=8)  # fmt: skip
        self.training, self.device = False, torch.device("cpu")

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def attention_maps(self, idx):
        B, T = idx.shape
        n = T // 2
        uniform = torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1)[:, None]
        weights = uniform.expand(B, 3, T, T).clone()
        layer1 = weights.clone()
        for t in range(n, T):
            layer1[:, 2, t] = 0
            layer1[:, 2, t, t - n + 1] = 1
        return type("Capture", (), {"weights": [weights, layer1], "scores": [weights, layer1]})


def test_induction_score_finds_the_induction_head_and_has_shape_layers_by_heads():
    scores = D.induction_scores(_InductionModel(), batch=5)
    assert scores.shape == (2, 3)
    assert scores[1, 2] == pytest.approx(1.0)
    assert scores[0].max() < 0.2 and scores[1, :2].max() < 0.2
    ids = D.repeated_sequence(20, 8, 2, seed=1)
    assert ids.shape == (2, 16) and torch.equal(ids[:, :8], ids[:, 8:])


def test_prompts_are_normalised_and_unencodable_defaults_skipped(tok):
    assert D.normalise_prompts(tok, "hi") == ["hi"]
    assert D.normalise_prompts(tok, None) == list(D.DEFAULT_PROMPTS)
    tiny = CharTokenizer("abc ")
    with pytest.raises(ValueError, match="default prompts"):
        D.normalise_prompts(tiny, None)
    with pytest.raises(ValueError):
        D.normalise_prompts(tok, [])
    assert D.display_piece(" a\n\t") == "\u2423a\u21b5\u2192"


# ============================================================================ sampling data


@pytest.fixture(scope="module")
def logits() -> np.ndarray:
    generator = torch.Generator().manual_seed(7)
    return (torch.randn(40, generator=generator) * 2.5).numpy()


@pytest.mark.parametrize(
    "cfg",
    [
        dict(temperature=1.0),
        dict(temperature=0.7, top_k=5),
        dict(temperature=1.3, top_p=0.8),
        dict(temperature=0.5, min_p=0.1),
        dict(temperature=2.0, top_k=10, top_p=0.5, min_p=0.05),
    ],
)
def test_every_stage_is_a_distribution_and_kept_tokens_carry_all_mass(logits, cfg):
    view = D.sampling_view(logits, SamplingConfig(**cfg), sample_n=300, seed=1)
    for probs in (view.base, view.tempered, view.final):
        assert probs.sum() == pytest.approx(1.0, abs=1e-6) and (probs >= 0).all()
    assert view.final[~view.kept].sum() == 0 and view.num_kept >= 1
    assert view.counts.sum() == 300 and view.counts[~view.kept].sum() == 0
    assert view.effective_vocab == pytest.approx(math.exp(view.entropy_final))
    reference = filter_stages(torch.tensor(logits), SamplingConfig(**cfg))  # one source of truth
    np.testing.assert_allclose(view.final, reference.final.probs.numpy(), atol=1e-7)


def test_top_k_one_and_zero_temperature_are_greedy(logits):
    argmax = int(np.argmax(logits))
    for config in (SamplingConfig(top_k=1), SamplingConfig(temperature=0.0)):
        view = D.sampling_view(logits, config)
        assert view.final[argmax] == 1.0 and view.num_kept == 1
    cold = D.sampling_view(logits, SamplingConfig(temperature=1e-4))  # T -> 0: argmax
    assert cold.final[argmax] == pytest.approx(1.0) and np.isfinite(cold.final).all()
    assert D.sampling_view(logits, D.sampling_config("greedy", 1.5)).final[argmax] == 1.0


def test_top_p_keeps_at_least_one_token_and_minus_infinity_logits_get_nothing(logits):
    view = D.sampling_view(logits, SamplingConfig(top_p=1e-6))
    assert view.num_kept == 1 and view.p_kept == 1
    masked = logits.copy()
    masked[[3, 5, 7]] = -np.inf
    view = D.sampling_view(masked, SamplingConfig(temperature=0.8), sample_n=500, seed=3)
    assert view.base[[3, 5, 7]].sum() == 0 and view.counts[[3, 5, 7]].sum() == 0
    assert view.final.sum() == pytest.approx(1.0)


def test_widget_values_map_to_a_sampling_config():
    assert D.sampling_config("sample", 0.8, 0, 1.0, 0.0) == SamplingConfig(temperature=0.8)
    assert D.sampling_config("sample", 1, 5, 0.9, 0.1) == SamplingConfig(1.0, 5, 0.9, 0.1)
    assert D.sampling_config("greedy", 0.8, 5).greedy
    assert D.sampling_config("beam", 0.8, 5) == SamplingConfig()  # beams rank by T = 1 log p


def test_sample_counts_are_seeded_and_follow_the_distribution():
    probs = np.array([0.5, 0.0, 0.3, 0.2])
    counts = D.sample_counts(probs, 4000, seed=11)
    assert counts.sum() == 4000 and counts[1] == 0
    np.testing.assert_allclose(counts / 4000, probs, atol=0.03)
    assert np.array_equal(counts, D.sample_counts(probs, 4000, seed=11))
    assert not np.array_equal(counts, D.sample_counts(probs, 4000, seed=12))
    with pytest.raises(ValueError):
        D.sample_counts([0.0, 0.0], 10)
    rand = D.mulberry32(42)
    first = [rand() for _ in range(3)]
    assert all(0 <= u < 1 for u in first) and len(set(first)) == 3


def test_greedy_path_follows_step_distributions(model, tok):
    path = D.greedy_path(model, tok, "To be", n_steps=3)
    for s in range(3):
        dist = step_distributions(model, path.contexts[s], SamplingConfig(temperature=0.0))
        assert path.chosen[s] == int(dist.final.probs.argmax())
    for s in range(2):
        assert path.contexts[s + 1] == [*path.contexts[s], path.chosen[s]]


def test_beam_tree_matches_brute_force_on_a_toy_model():
    toy = tiny_model(5, seed=2, sharpen=5.0)
    tok5 = CharTokenizer("abcde")
    context, depth = [0, 1], 2
    tree = D.beam_tree(toy, tok5, context, num_beams=25, depth=depth)
    with torch.no_grad():
        totals = {}
        for seq in itertools.product(range(5), repeat=depth):
            ids = torch.tensor([context + list(seq)])
            logp = toy(ids)[0].log_softmax(-1)[0]
            totals[seq] = sum(float(logp[len(context) - 1 + i, t]) for i, t in enumerate(seq))
    best = max(totals, key=totals.get)
    assert tree["best"][0]["text"] == "".join("abcde"[t] for t in best)
    assert tree["best"][0]["log_prob"] == pytest.approx(totals[best], abs=1e-4)
    step1 = tree["steps"][1]
    kept = [c for c in step1 if c["status"] == "kept"]
    assert len(kept) <= 25 and all(c["label"] in "abcde" for c in step1)
    narrow = D.beam_tree(toy, tok5, context, num_beams=2, depth=3)
    for candidates in narrow["steps"]:
        statuses = [c["status"] for c in candidates]
        assert statuses.count("kept") == 2 and "pruned" in statuses
        values = [c["log_prob"] for c in candidates]
        assert values == sorted(values, reverse=True)  # kept beams are the best scored


# ============================================================================ sizing data

SIZING_CONFIGS = [
    ModelConfig.preset(name) for name in ("tiny-postnorm", "course", "course-gpt2", "pythia-70m")
] + [
    ModelConfig(vocab_size=300, context_length=64, d_model=48, n_layers=3, n_heads=6,
                n_kv_heads=2, d_ff=100, positional="sinusoidal", norm="rmsnorm",
                norm_placement="post", activation="relu", bias=True, tie_embeddings=False),
    ModelConfig(vocab_size=77, context_length=32, d_model=16, n_layers=1, n_heads=1,
                d_ff=40, positional="none", activation="swiglu"),
]  # fmt: skip


@pytest.mark.parametrize("config", SIZING_CONFIGS, ids=lambda c: c.name)
def test_calculator_equals_the_built_model(config):
    figures = D.sizing_figures(config)
    assert figures["parameters"] == D.measure_parameters(config)  # numel of the meta-built model
    if figures["parameters"] < 3_000_000:  # and of a real one, where that is quick
        assert figures["parameters"] == TinyTransformer(config).num_parameters()
    assert figures["breakdown"][-1]["count"] == figures["parameters"]


def test_sizing_figures_follow_tinytrans_sizing():
    config = ModelConfig.preset("course")
    f = D.sizing_figures(config, 4, "bf16-mixed", "adamw", tokens=1e9, device="A100 (bf16 tensor)")
    s = sizing.summary(config, 4, "bf16", precision="bf16-mixed", tokens=1e9,
                       peak_tflops=sizing.PEAK_TFLOPS["A100 (bf16 tensor)"])  # fmt: skip
    assert f["memory"] == s.training.as_dict() and f["kv_cache"] == s.kv_cache
    assert f["training_flops"] == s.training_flops and f["six_nd"] == 6 * s.parameters * 1e9
    # The widget's optimizer choice is sizing.training_memory's, not a patch on top of it.
    sgd = D.sizing_figures(config, 4, "bf16-mixed", "sgd", tokens=1e9)
    assert (
        sgd["memory"]
        == sizing.training_memory(config, 4, 256, "bf16-mixed", optimizer="sgd").as_dict()
    )
    assert sgd["memory"]["optimizer"] == 0
    assert sgd["memory"]["total"] == f["memory"]["total"] - f["memory"]["optimizer"]
    momentum = D.sizing_figures(config, optimizer="sgd-momentum")
    assert momentum["memory"]["optimizer"] == 4 * f["parameters"]
    ckpt = D.sizing_figures(config, 4, "bf16-mixed", checkpointing=True, tokens=1e9)
    assert ckpt["memory"]["activations"] < f["memory"]["activations"]
    assert D.sizing_figures(config)["tokens"] == 20 * f["parameters"]
    with pytest.raises(ValueError, match="precision"):
        D.sizing_figures(config, precision="fp8")
    with pytest.raises(ValueError, match="optimizer must be one of"):
        D.sizing_figures(config, optimizer="adam-9bit")


def test_sizing_figures_speak_the_trainers_precision_names():
    """bf16-mixed is what the Trainer runs (fp32 weights and gradients, bf16 activations);
    bf16-true stores everything in bf16; the older names mean the mixed recipes."""
    config = ModelConfig.preset("course")
    n = sizing.count_parameters(config)
    fp32, mixed = D.sizing_figures(config, 2, "fp32"), D.sizing_figures(config, 2, "bf16-mixed")
    true = D.sizing_figures(config, 2, "bf16-true")
    assert mixed["memory"]["weights"] == mixed["memory"]["gradients"] == 4 * n
    assert mixed["memory"]["master_weights"] == 0
    assert fp32["memory"]["states"] == mixed["memory"]["states"] == 16 * n
    assert true["memory"]["states"] == 12 * n
    assert mixed["memory"]["activations"] == true["memory"]["activations"]
    assert mixed["memory"]["activations"] < fp32["memory"]["activations"]
    assert mixed["dtype"] == true["dtype"] == "bf16" and fp32["dtype"] == "fp32"
    for legacy in ("bf16", "mixed"):
        assert D.sizing_figures(config, 2, legacy) == mixed
    assert D.sizing_figures(config, 2, "fp16-mixed")["memory"] == mixed["memory"]
    assert set(render.PRECISION_LABELS) == set(PRECISIONS)
    assert set(render.OPTIMIZER_LABELS) == set(sizing.OPTIMIZER_STATE_BYTES)


# ============================================================================ static explorables


def test_static_is_chosen_by_argument_or_environment(monkeypatch):
    monkeypatch.delenv(static.STATIC_ENV, raising=False)
    assert not W.use_static() and W.use_static(True)
    monkeypatch.setenv(static.STATIC_ENV, "1")
    assert W.use_static() and not W.use_static(False)
    monkeypatch.setenv(static.STATIC_ENV, "0")
    assert not W.use_static()


def _check_self_contained(explorable: static.StaticExplorable) -> dict:
    bundle = explorable._repr_mimebundle_()
    assert set(bundle) == {"text/html", "image/png", "text/plain"}
    assert base64.b64decode(bundle["image/png"]).startswith(b"\x89PNG\r\n\x1a\n")
    html = bundle["text/html"]
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", html))
    assert urls <= {"http://www.w3.org/2000/svg"}, urls  # no CDN, no network
    for forbidden in ("<script src", "require(", "fetch(", "XMLHttpRequest", "import(", "<link"):
        assert forbidden not in html
    payload = re.search(
        r'<script type="application/json" class="tt-data">(.*?)</script>', html, re.S
    )
    assert payload and "</" not in payload.group(1)
    assert "TinyTrans.mount(" in html and html.count("<script") == 2
    return json.loads(payload.group(1))


def test_attention_explorable_embeds_the_captured_weights(model, tok):
    untrained = tiny_model(tok.vocab_size, seed=5)
    explorable = W.attention_explorer(model, tok, ["To be or not", "the cat"], static=True,
                                      compare_with=("untrained", untrained), label="trained")  # fmt: skip
    payload = _check_self_contained(explorable)
    assert payload["labels"] == ["trained", "untrained"] and len(payload["prompts"]) == 2
    record = D.capture_attention(model, tok, "the cat")
    entry = payload["prompts"][1]["models"][0]
    T = len(record.tokens)
    for L, H in itertools.product(range(2), range(4)):
        weights = np.array(entry["weights"][L][H]) / payload["weight_scale"]
        lower = record.weights[L, H][np.tril_indices(T)]
        np.testing.assert_allclose(weights, lower, atol=6e-4)
        scores = np.array(entry["scores"][L][H]).reshape(T, T) / payload["score_scale"]
        np.testing.assert_allclose(scores, record.scores[L, H], atol=6e-3)
    np.testing.assert_allclose(entry["stats"]["previous"], record.stats["previous"], atol=1e-4)


def test_sampling_explorable_embeds_logits_and_beam_trees(model, tok):
    explorable = W.sampling_explorer(model, tok, "To be", static=True, n_steps=3, temperature=0.7)
    payload = _check_self_contained(explorable)
    assert payload["defaults"]["temperature"] == 0.7 and payload["n_steps"] == 3
    path = D.greedy_path(model, tok, "To be", 3)
    for s, step in enumerate(payload["prompts"][0]["steps"]):
        np.testing.assert_allclose(step["logits"], path.logits[s], rtol=1e-6)
        assert set(step["beams"]) == {"1", "2", "3", "4"}
        assert step["context"] == tok.decode(path.contexts[s])
    assert len(payload["labels"]) == tok.vocab_size and not payload["truncated"]


def test_sampling_explorable_truncates_large_vocabularies(tok):
    big = tiny_model(600, seed=1)
    bpe_like = type("T", (), {"encode": lambda self, s: [ord(c) % 600 for c in s],
                              "decode": lambda self, ids: "".join(chr(65 + i % 26) for i in ids),
                              "id_to_piece": lambda self, i: f"<{i}>", "eos_id": None})()  # fmt: skip
    payload, _ = static.sampling_data(big, bpe_like, ["abc"], n_steps=1, beam_widths=(1,), depth=1)
    step = payload["prompts"][0]["steps"][0]
    assert payload["truncated"] and len(step["logits"]) == static.TRUNCATED_TOP_N
    assert step["logits"] == sorted(step["logits"], reverse=True) and len(step["labels"]) == 256


def test_sizing_explorable_embeds_presets_and_constants():
    explorable = W.parameter_explorer("gpt2-small", static=True, batch=2)
    payload = _check_self_contained(explorable)
    assert payload["default_preset"] == "gpt2-small" and payload["defaults"]["batch"] == 2
    assert {"llama2-7b", "tinyllama-1.1b", "gpt2-small", "tiny-postnorm"} <= set(payload["presets"])
    custom = W.parameter_explorer(ModelConfig.preset("course", d_ff=640), static=True)
    assert _check_self_contained(custom)["default_preset"] == "custom"
    with pytest.raises(TypeError):
        W.parameter_explorer(3.5, static=True)


def test_explorable_ids_are_unique_and_standalone_file(tmp_path):
    a = W.parameter_explorer("course", static=True)
    b = W.parameter_explorer("course", static=True)
    ids = [re.search(r'id="(tt-sizing-[^"]+)"', x.html).group(1) for x in (a, b)]
    assert ids[0] != ids[1]
    a.save_html(tmp_path / "page.html")
    assert (tmp_path / "page.html").read_text().startswith("<!doctype html>")


# ============================================================================ renderers


def test_heatmap_svg_masks_the_future_and_labels_every_token():
    weights = np.tril(np.full((4, 4), 0.25))
    svg = render.heatmap_svg(weights, ["a", "b", "<", "d"], title="t")
    assert svg.count("<rect x=") == 10 + 1  # lower triangle + frame
    assert 'class="tt-masked"' in svg and "&lt;" in svg and svg.count('class="tt-row"') == 4
    assert render.palette_colour(0, 0, 1) == render.BLUES[0]
    assert render.palette_colour(1, 0, 1) == render.BLUES[-1]
    assert render.palette_colour(0, -1, 1, render.PUOR) == render.PUOR[5]
    assert render.ink_for("#08306b") == "#ffffff" and render.ink_for("#f7fbff") == "#000000"


def test_figures_render_to_png(model, tok):
    record = D.capture_attention(model, tok, "abc")
    png = render.figure_png(render.attention_figure([record], 1, 2))
    assert png.startswith(b"\x89PNG")
    view = D.sampling_view(np.arange(5.0), SamplingConfig())
    assert render.figure_png(render.sampling_figure(view, list("abcde"))).startswith(b"\x89PNG")
    history = [
        {"step": 10, "train_loss": 3.0, "val_loss": 3.2},
        {"step": 20, "train_loss": 2.0, "val_loss": 2.5},
    ]
    fig = render.loss_figure(history, [3.5, 3.0, 2.5, 2.2])
    assert len(fig.axes[0].lines) == 3
    assert render.smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])


# ============================================================================ live shells


def test_live_attention_explorer_redraws_and_surfaces_errors(model, tok):
    other = tiny_model(tok.vocab_size, seed=9)
    explorer = W.attention_explorer(
        model, tok, ["To be", "the cat sat"], compare_with=other, static=False
    )
    assert isinstance(explorer, live.AttentionExplorer) and explorer.errors == []
    assert explorer.query.max == 4 and explorer.view.value.count('data-testid="tt-panel"') == 2
    seen = {explorer.view.value}
    for control, value in ((explorer.layer, 1), (explorer.head, 2), (explorer.mode, "steps"),
                           (explorer.query, 1), (explorer.head, "all"), (explorer.mode, "scores")):  # fmt: skip
        control.value = value
        assert explorer.view.value not in seen and explorer.last_error is None
        seen.add(explorer.view.value)
    explorer.prompt.value = "the cat sat"
    assert explorer.query.max == 10 and explorer.query.value == 10
    explorer.prompt.value = "caf\u00e9"  # not in the alphabet
    assert isinstance(explorer.last_error, ValueError) and "U+00E9" in explorer.error.value
    explorer.prompt.value = "the cat"
    assert explorer.last_error is None and explorer.error.value == "" and len(explorer.errors) == 1


def test_live_sampling_explorer_matches_filter_stages_and_resamples(model, tok):
    explorer = W.sampling_explorer(model, tok, "To be", static=False)
    assert isinstance(explorer, live.SamplingExplorer) and explorer.errors == []
    before = explorer.view.value
    explorer.temperature.value, explorer.top_k.value = 0.6, 7
    explorer.top_p.value, explorer.min_p.value = 0.8, 0.02
    explorer.step.value = 2
    assert explorer.view.value != before
    config = SamplingConfig(0.6, 7, 0.8, 0.02)
    expected = step_distributions(model, explorer.path().contexts[2], config)
    np.testing.assert_allclose(explorer.current.final, expected.final.probs.numpy(), atol=1e-7)
    histogram = explorer.current.counts.copy()
    explorer.resample.click()
    assert explorer.seed.value == 1 and not np.array_equal(histogram, explorer.current.counts)
    explorer.method.value = "beam"
    assert 'data-testid="tt-beam"' in explorer.view.value and explorer.top_k.disabled
    explorer.method.value = "greedy"
    assert explorer.current.num_kept == 1 and explorer.errors == []


def test_live_parameter_explorer_presets_validation_and_measure(monkeypatch):
    explorer = W.parameter_explorer("tiny-postnorm", static=False)
    assert explorer.errors == [] and explorer.current["parameters"] == 2_327_552
    explorer.preset.value = "course"
    assert explorer.fields["d_model"].value == 192 and explorer.current["parameters"] == 1_789_632
    explorer.fields["n_heads"].value = 5  # 192 is not divisible by 5
    assert isinstance(explorer.last_error, ValueError) and "tt-error" in explorer.error.value
    explorer.fields["n_heads"].value = 6
    assert explorer.last_error is None and explorer.preset.value == "custom"
    explorer.batch.value, explorer.precision.value = 2, "bf16-mixed"
    explorer.measure.click()
    assert (
        explorer.measured == explorer.current["parameters"] and "tt-measured" in explorer.view.value
    )

    def broken(_config):
        raise RuntimeError("meta device unavailable")

    monkeypatch.setattr(D, "measure_parameters", broken)
    explorer.measure.click()  # Button.on_click would swallow this; the explorer must not
    assert isinstance(explorer.last_error, RuntimeError)
    assert "meta device unavailable" in explorer.error.value


def test_loss_plot_collects_history_and_draws_only_when_asked(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.get_ipython", lambda: object())
    monkeypatch.setattr("IPython.display.display", lambda obj, **kw: shown.append(obj) or _Handle())
    trainer = type("Trainer", (), {})()
    trainer.history = [{"step": 5, "train_loss": 3.1, "val_loss": 3.3}]
    trainer.train_losses = [3.5, 3.3, 3.2, 3.1, 3.1]
    static_plot = W.loss_plot(static=True)
    static_plot.on_eval(trainer, trainer.history[-1])
    assert shown == [] and static_plot.history == trainer.history
    static_plot.show()
    assert len(shown) == 1
    live_plot = W.loss_plot(static=False)
    live_plot.on_eval(trainer.history)  # a plain history list works too
    live_plot.on_eval(trainer, trainer.history[-1])
    assert len(shown) == 2 and live_plot._handle.updates == 1  # one display, updated in place


class _Handle:
    def __init__(self) -> None:
        self.updates = 0

    def update(self, _obj) -> None:
        self.updates += 1


def test_compare_requires_matching_shapes_and_distinct_labels(model, tok):
    other = TinyTransformer(ModelConfig(vocab_size=tok.vocab_size, context_length=64, d_model=32,
                                        n_layers=3, n_heads=4, d_ff=64))  # fmt: skip
    with pytest.raises(ValueError, match="same layers"):
        W.attention_explorer(model, tok, "abc", compare_with=other, static=True)
    with pytest.raises(ValueError, match="labels"):
        W.attention_explorer(model, tok, "abc", compare_with={"model": model}, static=True)


# ============================================================================ JS ports (Node.js)

NODE = shutil.which("node")


def run_js(script: str, *assets: str) -> object:
    """Evaluate ``script`` after the named assets in Node and return its JSON output."""
    code = "global.window = global;\n" + "\n".join((ASSETS / a).read_text() for a in assets)
    result = subprocess.run([NODE, "-"], input=code + "\n" + script, capture_output=True,
                            text=True, timeout=60, check=True)  # fmt: skip
    return json.loads(result.stdout)


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed (the browser test covers this)")
def test_js_sampling_filters_equal_python(logits):
    grid = [dict(temperature=t, top_k=k, top_p=p, min_p=m)
            for t, k, p, m in itertools.product((0.0, 0.05, 0.7, 1.0, 1.6), (0, 1, 6),
                                                (1.0, 0.9, 0.3), (0.0, 0.1))]  # fmt: skip
    masked = logits.copy()
    masked[4] = -np.inf
    cases = [(row, cfg) for row in (logits, masked) for cfg in grid]
    script = (
        "const cases = "
        + json.dumps(
            [[[None if not np.isfinite(v) else float(v) for v in row], cfg] for row, cfg in cases]
        )
        + """;
console.log(JSON.stringify(cases.map(([row, cfg]) => {
  const x = row.map(v => v === null ? -Infinity : v);
  const st = TinyTrans.sampling.stages(x, {temperature: cfg.temperature, top_k: cfg.top_k,
      top_p: cfg.top_p < 1 ? cfg.top_p : null, min_p: cfg.min_p});
  const final = st[st.length - 1].probs;
  return {final: final, counts: TinyTrans.sampleCounts(final, 300, 5)};
})));"""
    )
    results = run_js(script, "explorers.js", "sampling.js")
    for (row, cfg), got in zip(cases, results, strict=True):
        config = D.sampling_config(
            "sample", cfg["temperature"], cfg["top_k"], cfg["top_p"], cfg["min_p"]
        )
        view = D.sampling_view(row, config, sample_n=300, seed=5)
        np.testing.assert_allclose(got["final"], view.final, atol=2e-6, err_msg=str(cfg))
        assert got["counts"] == view.counts.tolist(), cfg


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed (the browser test covers this)")
def test_js_sizing_formulas_equal_python():
    payload = static.sizing_data(ModelConfig.preset("course"))
    options = [dict(batch=b, precision=p, optimizer=o, checkpointing=c, tokens=t,
                    device="H100 SXM (bf16 tensor)", mfu=0.35)
               for b, p, o, c, t in [(1, "fp32", "adamw", False, 0), (8, "bf16-mixed", "sgd", True, 3e9),
                                     (3, "bf16-true", "sgd-momentum", False, 1e6),
                                     (2, "fp16-mixed", "adamw", True, 0)]]  # fmt: skip
    configs = [
        *SIZING_CONFIGS,
        ModelConfig.preset("llama2-7b"),
        ModelConfig.preset("tinyllama-1.1b"),
    ]
    cases = [(c.to_dict(), o) for c in configs for o in options]
    script = (
        f"const data = {json.dumps(payload)}; const cases = {json.dumps(cases)};"
        + """
console.log(JSON.stringify(cases.map(([c, o]) => {
  const f = TinyTrans.sizing.figures(c, o, data);
  return {f: f, text: [TinyTrans.sizing.formatBytes(f.memory.total), TinyTrans.sizing.formatFlops(f.training_flops),
                       TinyTrans.sizing.formatCount(f.parameters), TinyTrans.sizing.formatDuration(f.training_seconds)],
          error: TinyTrans.sizing.validate(c)};
})));"""
    )
    for (config, o), got in zip(cases, run_js(script, "explorers.js", "sizing.js"), strict=True):
        expected = D.sizing_figures(ModelConfig.from_dict(config), o["batch"], o["precision"], o["optimizer"],
                                    o["checkpointing"], o["tokens"] or None, o["device"], o["mfu"])  # fmt: skip
        f = got["f"]
        assert got["error"] is None
        for key in ("parameters", "non_embedding", "kv_cache", "weights_inference",
                    "forward_flops_per_token", "training_flops_per_token"):  # fmt: skip
            assert f[key] == expected[key], key
        assert f["memory"] == expected["memory"]
        for row, want in zip(f["breakdown"], expected["breakdown"], strict=True):
            assert row == {**want, "share": pytest.approx(want["share"], rel=1e-12)}
        for key in ("tokens", "training_flops", "six_nd", "training_seconds", "predicted_loss"):
            assert f[key] == pytest.approx(expected[key], rel=1e-12), key
        assert got["text"] == [sizing.format_bytes(expected["memory"]["total"]),
                               sizing.format_flops(expected["training_flops"]),
                               sizing.format_count(expected["parameters"]),
                               sizing.format_duration(expected["training_seconds"])]  # fmt: skip
    bad = run_js("console.log(JSON.stringify(TinyTrans.sizing.validate("
                 '{vocab_size: 10, context_length: 8, d_model: 30, n_layers: 1, n_heads: 4, d_ff: 8})))',
                 "explorers.js", "sizing.js")  # fmt: skip
    assert "divisible" in bad


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed (the browser test covers this)")
def test_js_number_formatting_equals_python():
    """Python rounds ties to even; the JS must too (e.g. 12.5 -> "12", 0.125 -> "0.12")."""
    values = [0.0, 1.0, 0.88, 880.0, 8.3, 12.5, 99.96, 99.5, 1234.5, 0.000123, 1e-5, 3.15e23,
              2.0e9, 0.5, 0.125, 2.675, -0.0625, 1125.0, 9.995, 1e16 + 2, 7.5e-7]  # fmt: skip
    script = f"const xs = {json.dumps(values)};" + """
console.log(JSON.stringify(xs.map(x => [TinyTrans.pyG(x, 2), TinyTrans.pyG(x, 3), TinyTrans.fmt(x, 3),
  TinyTrans.fixed(x, 0), TinyTrans.fixed(x, 2), TinyTrans.sizing.formatDuration(Math.abs(x)),
  TinyTrans.sizing.formatBytes(Math.abs(x)), TinyTrans.sizing.formatFlops(Math.abs(x)),
  TinyTrans.sizing.formatCount(Math.abs(x))])));"""  # fmt: skip
    got = run_js(script, "explorers.js", "sizing.js")
    expected = [
        [f"{x:.2g}", f"{x:.3g}", render.fmt(x, 3), f"{x:.0f}", f"{x:.2f}",
         sizing.format_duration(abs(x)), sizing.format_bytes(abs(x)), sizing.format_flops(abs(x)),
         sizing.format_count(abs(x))]
        for x in values
    ]  # fmt: skip
    for x, row_got, row_expected in zip(values, got, expected, strict=True):
        assert row_got == row_expected, x


def test_importing_the_live_widgets_creates_no_widget():
    """A widget made at import puts widget state into every notebook that imports
    ``loss_plot``, and the static book then loads the widget manager from a CDN."""
    code = (
        "import ipywidgets.widgets.widget as w\n"
        "import tinytrans.widgets.live\n"
        "from tinytrans.widgets import loss_plot\n"
        "loss_plot(static=True)\n"
        "print(len(w._instances))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "0"


def test_prompt_excerpt_cuts_at_a_word_boundary_on_one_line():
    text = "HAMLET:\nTo be, or not to be, that is the question: whether 'tis"
    shown = render.prompt_excerpt(text, width=40)
    assert shown.startswith("\u2026") and "\n" not in shown
    assert text.replace("\n", "\\n").endswith(shown[1:])
    assert shown[1] != " " and text[len(text) - len(shown[1:]) - 1].isspace()
    assert render.prompt_excerpt("ROMEO:\nO") == "ROMEO:\\nO"


def test_sizing_png_legends_do_not_cover_axis_labels():
    """Each bar of the sizing PNG is shares of one total: no x tick labels for the legend
    below it to run into, and every legend lies below its own bar."""
    fig = render.sizing_figure(D.sizing_figures(ModelConfig.preset("course")), "course")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        assert [t.get_text() for t in ax.get_xticklabels()] == []
        legend = ax.get_legend().get_window_extent(renderer)
        assert legend.y1 <= ax.get_window_extent(renderer).y0 + 1


# ============================================================================ import structure

PACKAGE = Path(__file__).resolve().parents[1] / "tinytrans"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(path: Path, modules: set[str], *, function_local: bool) -> set[str]:
    """The package's modules that ``path`` imports: every import statement, or only those
    inside functions (``function_local=True``). Imports under ``if TYPE_CHECKING:`` never run,
    so they make no cycle and are left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    if function_local:
        functions = [
            n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        ]
        nodes = [n for f in functions for n in ast.walk(f)]
    else:
        nodes = list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parents = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parents, *([node.module] if node.module else [])])
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:
                    found.add(f"{base}.{alias.name}")
                elif base in modules:
                    found.add(base)
    return found - {name}


def _package_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def test_no_module_imports_itself_back_through_a_cycle():
    """Every import of the package's own modules, at the top or inside a function, forms an
    acyclic graph (render <-> static used to hide a cycle behind function-local imports)."""
    modules = _package_modules()
    graph = {
        m: _imported_modules(p, set(modules), function_local=False) for m, p in modules.items()
    }
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycle = (
                    [*path[path.index(target) :], target] if target in path else [module, target]
                )
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_the_cycle_check_finds_a_cycle(tmp_path, monkeypatch):
    package = tmp_path / "tinytrans"
    (package / "widgets").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "widgets" / "__init__.py").write_text("")
    (package / "widgets" / "a.py").write_text("def f():\n    from tinytrans.widgets import b\n")
    (package / "widgets" / "b.py").write_text("from tinytrans.widgets.a import f\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", package)
    with pytest.raises(pytest.fail.Exception, match=r"import cycle: .*widgets\.a -> .*widgets\.b"):
        test_no_module_imports_itself_back_through_a_cycle()


def test_widgets_import_the_package_at_the_top():
    """Inside functions the widgets import only what must stay lazy: the live explorers
    (ipywidgets) and third-party plotting/IPython, never another module of the package."""
    modules = _package_modules()
    for name, path in modules.items():
        if name.startswith("tinytrans.widgets"):
            local = _imported_modules(path, set(modules), function_local=True)
            assert local <= {"tinytrans.widgets.live"}, (name, local)


def test_importing_the_widgets_stays_light():
    """The package's own imports moved to the top; ipywidgets and matplotlib stay lazy."""
    code = (
        "import sys, tinytrans.widgets, tinytrans.widgets.static, tinytrans.widgets.render\n"
        "print(sorted(m for m in ('ipywidgets', 'matplotlib', 'IPython', 'transformers')"
        " if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        cwd=PACKAGE.parent,
    )  # fmt: skip
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
