"""Interactive explorers for attention (section 1.15), sampling (section 4.5) and model size
(section 5.8), plus a live loss plot (section 3.6).

Each entry point returns either a live ipywidgets explorer (in a notebook with a kernel) or a
static explorable (in the rendered book): self-contained HTML + vanilla JavaScript with the
data embedded, and a PNG of its default view in the same output. ``static=None`` picks static
when the environment variable ``TINYTRANS_STATIC_WIDGETS=1`` (set by ``make book``), else live.

Layers: :mod:`.data` (numbers, torch/numpy only) -> :mod:`.render` (HTML strings, matplotlib
figures) -> :mod:`.live` (ipywidgets) or :mod:`.static` (explorables; JS in ``assets/``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tinytrans.config import ModelConfig
from tinytrans.widgets import data, render
from tinytrans.widgets.static import (
    STATIC_ENV,
    StaticExplorable,
    attention_static,
    sampling_static,
    sizing_static,
    use_static,
)

__all__ = [
    "STATIC_ENV",
    "StaticExplorable",
    "attention_explorer",
    "data",
    "loss_plot",
    "parameter_explorer",
    "render",
    "sampling_explorer",
    "use_static",
]


def _models(model: Any, label: str, compare_with: Any) -> list[tuple[str, Any]]:
    """``[(label, model), ...]`` from a model plus ``compare_with``: a model, a
    ``(label, model)`` pair or a ``{label: model}`` mapping."""
    models = [(label, model)]
    if compare_with is None:
        return models
    if isinstance(compare_with, Mapping):
        models += [(str(k), v) for k, v in compare_with.items()]
    elif (
        isinstance(compare_with, tuple)
        and len(compare_with) == 2
        and isinstance(compare_with[0], str)
    ):
        models.append(compare_with)
    else:
        models.append(("compare", compare_with))
    shapes = {(m.config.n_layers, m.config.n_heads) for _, m in models}
    if len(shapes) != 1:
        raise ValueError(f"models to compare need the same layers and heads, got {sorted(shapes)}.")
    if len({name for name, _ in models}) != len(models):
        raise ValueError(f"model labels must differ, got {[name for name, _ in models]}.")
    return models


def attention_explorer(
    model: Any,
    tokenizer: Any,
    prompts: str | Sequence[str] | None = None,
    compare_with: Any = None,
    static: bool | None = None,
    *,
    label: str = "model",
    max_tokens: int = 32,
) -> Any:
    """Attention weights of every layer and head (or their mean), pre-softmax scores and the
    mask/softmax steps, a token strip for one query, and per-head statistics (entropy,
    previous-token, first-token and induction scores); ``compare_with`` adds other
    checkpoints side by side, e.g. ``compare_with=("untrained", fresh_model)`` (section 1.15)."""
    models = _models(model, label, compare_with)
    chosen = data.normalise_prompts(tokenizer, prompts)
    if use_static(static):
        return attention_static(data.attention_records(models, tokenizer, chosen, max_tokens))
    from tinytrans.widgets.live import AttentionExplorer  # ipywidgets: only when live

    return AttentionExplorer(models, tokenizer, chosen, max_tokens)


def sampling_explorer(
    model: Any,
    tokenizer: Any,
    prompts: str | Sequence[str] | None = None,
    static: bool | None = None,
    *,
    n_steps: int = 8,
    **defaults: Any,
) -> Any:
    """One decoding step at a time: the next-token distribution at T = 1, after temperature
    and after top-k / top-p / min-p (dropped tokens dimmed), the cumulative curve with the p
    cut-off, entropy and effective vocabulary, a seeded "sample N" histogram against theory,
    and beam-search trees. ``defaults`` sets the starting controls of the live explorer and the
    static explorable alike (``temperature``, ``top_k``, ``top_p``, ``min_p``, ``method``, ``n``,
    ``seed``, ``beams``) (section 4.5)."""
    chosen = data.normalise_prompts(tokenizer, prompts)
    if use_static(static):
        return sampling_static(model, tokenizer, chosen, n_steps=n_steps, defaults=defaults)
    from tinytrans.widgets.live import SamplingExplorer

    return SamplingExplorer(model, tokenizer, chosen, n_steps, defaults=defaults)


def _config(config_or_preset: Any) -> Any:
    if config_or_preset is None:
        return ModelConfig.preset("course")
    if isinstance(config_or_preset, str):
        return ModelConfig.preset(config_or_preset)
    if isinstance(config_or_preset, ModelConfig):
        return config_or_preset
    if isinstance(getattr(config_or_preset, "config", None), ModelConfig):
        return config_or_preset.config
    raise TypeError(f"expected a ModelConfig, a preset name or a model, got {config_or_preset!r}.")


def parameter_explorer(
    config_or_preset: Any = None, static: bool | None = None, **defaults: Any
) -> Any:
    """Parameters per component, training and inference memory, FLOPs per token, training
    compute (config-exact and 6ND) and time, for any architecture or preset (default: the
    course model). Live, "measure" builds the model on the meta device to check the count
    (section 5.8)."""
    config = _config(config_or_preset)
    if use_static(static):
        return sizing_static(config, **defaults)
    from tinytrans.widgets.live import ParameterExplorer

    return ParameterExplorer(config)


def loss_plot(static: bool | None = None, title: str = "loss") -> Any:
    """A :class:`~tinytrans.widgets.live.LossPlot` to pass to ``Trainer(callbacks=[...])``;
    call ``.show()`` after training (static mode draws only the final figure) (section 3.6)."""
    from tinytrans.widgets.live import LossPlot

    return LossPlot(static=use_static(static), title=title)
