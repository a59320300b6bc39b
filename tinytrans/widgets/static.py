"""Layer 3b: self-contained static explorables for the rendered book (no kernel), as the
explorers of sections 1.15, 4.5 and 5.8 appear on the book's pages.

An explorable is one ``text/html`` output -- inline CSS, inline vanilla JavaScript from
``assets/``, the data as embedded JSON; no CDN, no require.js, no network request -- plus an
``image/png`` of the default view in the same display bundle (for PDF builds and viewers that
do not run scripts). The JavaScript recomputes what the controls change (sampling filters,
sizing formulas) from the embedded numbers; ``tests/test_browser.py`` pins it to Python.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
from dataclasses import dataclass
from typing import Any

from tinytrans import config as tconfig
from tinytrans import sizing
from tinytrans.precision import PRECISIONS
from tinytrans.widgets import data as wdata
from tinytrans.widgets import render
from tinytrans.widgets.render import read_asset

__all__ = [
    "FULL_VOCAB_LIMIT",
    "SAMPLING_DEFAULTS",
    "SCORE_SCALE",
    "SIZING_DEFAULTS",
    "STATIC_ENV",
    "TRUNCATED_TOP_N",
    "WEIGHT_SCALE",
    "StaticExplorable",
    "attention_data",
    "attention_static",
    "explorable_html",
    "make_explorable",
    "read_asset",
    "sampling_data",
    "sampling_static",
    "script_safe_json",
    "sizing_data",
    "sizing_static",
    "use_static",
]

STATIC_ENV = "TINYTRANS_STATIC_WIDGETS"
_counter = itertools.count()


def use_static(static: bool | None = None) -> bool:
    """``static`` if given, else True when ``TINYTRANS_STATIC_WIDGETS=1`` (set by ``make book``)
    (the explorers of sections 1.15, 4.5 and 5.8)."""
    if static is not None:
        return bool(static)
    return os.environ.get(STATIC_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def script_safe_json(data: Any) -> str:
    """JSON that cannot end the enclosing ``<script>`` element early
    (the explorers of sections 1.15, 4.5 and 5.8)."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@dataclass
class StaticExplorable:
    """A display object: HTML (interactive), PNG (default view) and a text summary
    (the explorers of sections 1.15, 4.5 and 5.8)."""

    kind: str
    html: str
    png: bytes
    text: str

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, Any]:
        return {
            "text/html": self.html,
            "image/png": base64.b64encode(self.png).decode("ascii"),
            "text/plain": self.text,
        }

    def save_html(self, path: str | os.PathLike[str]) -> None:
        """Write a standalone page (open it in any browser, offline)."""
        page = (
            '<!doctype html><html><head><meta charset="utf-8"><title>tinytrans '
            f"{self.kind} explorer</title></head><body>{self.html}</body></html>"
        )
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(page)


def explorable_html(kind: str, data: dict[str, Any]) -> str:
    """The HTML of one explorable: a root element, its JSON, the CSS and the mounting script
    (the explorers of sections 1.15, 4.5 and 5.8)."""
    payload = script_safe_json(data)
    digest = hashlib.sha1(payload.encode("utf-8")).hexdigest()[:10]
    root = f"tt-{kind}-{digest}-{next(_counter)}"
    code = read_asset("explorers.js") + "\n" + read_asset(f"{kind}.js")
    return (
        f'<div class="tt-explorer tt-{kind}" id="{root}" data-testid="tt-{kind}-explorer">'
        f"<style>{read_asset('explorers.css')}</style>"
        f'<script type="application/json" class="tt-data">{payload}</script>'
        f'<div class="tt-mount"><p class="tt-note">Interactive {kind} explorer: this needs '
        "JavaScript; the image output shows its default view.</p></div></div>"
        f"<script>(function(){{{code}\nTinyTrans.mount({json.dumps(kind)}, "
        f"{json.dumps(root)});}})();</script>"
    )


def make_explorable(kind: str, data: dict[str, Any], png: bytes, text: str) -> StaticExplorable:
    """A :class:`StaticExplorable` of ``kind`` from its data, its PNG and a text summary (the
    explorers of sections 1.15, 4.5 and 5.8)."""
    return StaticExplorable(kind=kind, html=explorable_html(kind, data), png=png, text=text)


# ----------------------------------------------------------------------------- attention


def _lower(matrix: Any, scale: float) -> list[int]:
    """Row-major lower triangle (key <= query) of a (T, T) array, as rounded integers."""
    T = matrix.shape[0]
    return [round(float(matrix[q, k]) * scale) for q in range(T) for k in range(q + 1)]


def _full(matrix: Any, scale: float) -> list[int]:
    return [round(float(v) * scale) for v in matrix.reshape(-1)]


WEIGHT_SCALE = 1000  # weights travel as integers in thousandths
SCORE_SCALE = 100  # scores in hundredths


def attention_data(records: list[list[Any]]) -> dict[str, Any]:
    """JSON for the attention explorable: ``records[model][prompt]`` -> nested lists
    (section 1.15)."""
    first = records[0][0]
    prompts = []
    for p in range(len(records[0])):
        per_model = []
        for model_records in records:
            rec = model_records[p]
            per_model.append(
                {
                    "weights": [
                        [_lower(rec.weights[L, H], WEIGHT_SCALE) for H in range(rec.n_heads)]
                        for L in range(rec.n_layers)
                    ],
                    "scores": [
                        [_full(rec.scores[L, H], SCORE_SCALE) for H in range(rec.n_heads)]
                        for L in range(rec.n_layers)
                    ],
                    "stats": {k: _rounded(v) for k, v in rec.stats.items()},
                }
            )
        base = records[0][p]
        prompts.append({"text": base.text, "tokens": base.tokens, "models": per_model})
    return {
        "labels": [m[0].label for m in records],
        "n_layers": first.n_layers,
        "n_heads": first.n_heads,
        "weight_scale": WEIGHT_SCALE,
        "score_scale": SCORE_SCALE,
        "prompts": prompts,
    }


def _rounded(array: Any) -> list[list[float | None]]:
    return [[None if v != v else round(float(v), 4) for v in row] for row in array.tolist()]


def attention_static(records: list[list[Any]]) -> StaticExplorable:
    """The attention explorable; PNG = layer 0, mean of heads, first prompt, every model
    (section 1.15)."""
    png = render.figure_png(render.attention_figure([m[0] for m in records], 0, "mean"))
    labels = ", ".join(m[0].label for m in records)
    text = f"Attention explorer ({labels}; {len(records[0])} prompt(s))"
    return make_explorable("attention", attention_data(records), png, text)


# ----------------------------------------------------------------------------- sampling

SAMPLING_DEFAULTS = {
    "method": "sample",
    "temperature": 1.0,
    "top_k": 0,
    "top_p": 1.0,
    "min_p": 0.0,
    "n": 200,
    "seed": 0,
    "beams": 2,
}
FULL_VOCAB_LIMIT = 512  # embed every logit up to this vocabulary size ...
TRUNCATED_TOP_N = 256  # ... else only the most likely ones


def _f32(values: Any) -> list[float]:
    """float32 values with 9 significant digits (enough to round-trip float32)."""
    return [float(f"{float(v):.9g}") for v in values]


def _sampling_step(
    path: Any, s: int, tokenizer: Any, labels: list[str] | None, trees: dict
) -> dict:
    logits = path.logits[s]
    step: dict[str, Any] = {
        "context": tokenizer.decode(path.contexts[s]),
        "next": wdata.display_piece(tokenizer.id_to_piece(path.chosen[s])),
        "beams": trees,
    }
    if labels is None:  # large vocabulary: the most likely tokens only
        top = sorted(range(len(logits)), key=lambda i: (-float(logits[i]), i))[:TRUNCATED_TOP_N]
        step["logits"] = _f32(logits[top])
        step["labels"] = [wdata.display_piece(tokenizer.id_to_piece(i)) for i in top]
    else:
        step["logits"] = _f32(logits)
    return step


def sampling_data(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    n_steps: int = 8,
    beam_widths: tuple[int, ...] = (1, 2, 3, 4),
    depth: int = 4,
    defaults: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], list[Any]]:
    """JSON for the sampling explorable (and the greedy paths it was built from) (section 4.5)."""
    vocab = model.config.vocab_size
    full = vocab <= FULL_VOCAB_LIMIT
    labels = [wdata.display_piece(tokenizer.id_to_piece(i)) for i in range(vocab)] if full else None
    eos = getattr(tokenizer, "eos_id", None)
    paths, prompt_data = [], []
    for prompt in prompts:
        path = wdata.greedy_path(model, tokenizer, prompt, n_steps)
        paths.append(path)
        steps = []
        for s in range(n_steps):
            trees = {
                str(w): wdata.beam_tree(model, tokenizer, path.contexts[s], w, depth, eos)
                for w in beam_widths
            }
            steps.append(_sampling_step(path, s, tokenizer, labels, trees))
        prompt_data.append({"text": prompt, "steps": steps})
    data = {
        "vocab_size": vocab,
        "truncated": not full,
        "labels": labels,
        "n_steps": n_steps,
        "beam_widths": list(beam_widths),
        "defaults": {**SAMPLING_DEFAULTS, **(defaults or {})},
        "prompts": prompt_data,
    }
    return data, paths


def sampling_static(
    model: Any, tokenizer: Any, prompts: list[str], **kwargs: Any
) -> StaticExplorable:
    """The sampling explorable; PNG = the first prompt's first step at the default setting
    (section 4.5)."""
    payload, paths = sampling_data(model, tokenizer, prompts, **kwargs)
    d = payload["defaults"]
    config = wdata.sampling_config(
        d["method"], d["temperature"], d["top_k"], d["top_p"], d["min_p"]
    )
    view = wdata.sampling_view(paths[0].logits[0], config)
    labels = payload["labels"] or wdata.token_labels(tokenizer, range(model.config.vocab_size))
    title = f"next token after \u201c{render.prompt_excerpt(prompts[0])}\u201d"
    png = render.figure_png(render.sampling_figure(view, labels, title))
    text = f"Sampling explorer ({len(prompts)} prompt(s), {payload['n_steps']} steps)"
    return make_explorable("sampling", payload, png, text)


# ----------------------------------------------------------------------------- sizing

SIZING_DEFAULTS = {
    "batch": 8,
    "precision": "fp32",
    "optimizer": "adamw",
    "checkpointing": False,
    "tokens": 0,
    "mfu": 0.4,
}


def sizing_data(config: Any, defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """JSON for the sizing explorable: presets, choices and the constants of the formulas
    (section 5.8)."""
    presets = {name: tconfig.ModelConfig.preset(name).to_dict() for name in tconfig.preset_names()}
    start = (
        config.name
        if config.name in presets and tconfig.ModelConfig.preset(config.name) == config
        else "custom"
    )
    order = tconfig.preset_names()
    if start == "custom":
        presets["custom"] = config.to_dict()
        order = ["custom", *order]
    fit = sizing.CHINCHILLA
    return {
        "presets": presets,
        "preset_order": order,
        "default_preset": start,
        "devices": dict(sizing.PEAK_TFLOPS),
        "dtype_bytes": dict(sizing.DTYPE_BYTES),
        "optimizer_bytes": dict(sizing.OPTIMIZER_STATE_BYTES),
        "optimizer_labels": dict(render.OPTIMIZER_LABELS),
        "precision_labels": dict(render.PRECISION_LABELS),
        "precisions": {
            name: {"weights": p.weights, "compute": p.compute, "master_weights": p.master_weights}
            for name, p in PRECISIONS.items()
        },
        "tokens_per_param": sizing.CHINCHILLA_TOKENS_PER_PARAM,
        "chinchilla": {"E": fit.E, "A": fit.A, "B": fit.B, "alpha": fit.alpha, "beta": fit.beta},
        "choices": {
            "positional": list(tconfig.POSITIONAL_CHOICES),
            "norm": list(tconfig.NORM_CHOICES),
            "norm_placement": list(tconfig.PLACEMENT_CHOICES),
            "activation": list(tconfig.ACTIVATION_CHOICES),
        },
        "defaults": {
            **SIZING_DEFAULTS,
            "device": next(iter(sizing.PEAK_TFLOPS)),
            **(defaults or {}),
        },
    }


def sizing_static(config: Any, **defaults: Any) -> StaticExplorable:
    """The parameter/memory/FLOPs explorable; PNG = the starting configuration (section 5.8)."""
    payload = sizing_data(config, defaults)
    d = payload["defaults"]
    figures = wdata.sizing_figures(
        config, d["batch"], d["precision"], d["optimizer"], d["checkpointing"],
        d["tokens"] or None, d["device"], d["mfu"],
    )  # fmt: skip
    png = render.figure_png(render.sizing_figure(figures, f"{config.name}"))
    text = f"Parameter explorer ({config.name}: {figures['parameters']:,} parameters)"
    return make_explorable("sizing", payload, png, text)
