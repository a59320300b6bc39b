"""Layer 3a: live explorers built from core ipywidgets only (sections 1.15, 4.5 and 5.8).

Controls (sliders, dropdowns, text, buttons) recompute data with :mod:`.data` and put the HTML
of :mod:`.render` into an ``ipywidgets.HTML``. No custom front-end code, so the explorers work
wherever core ipywidgets do (Jupyter, JupyterLab, VS Code, Colab, Kaggle).

Errors are never swallowed: an exception raised while updating is shown in the explorer's
error panel, kept in ``explorer.last_error`` (``None`` after the next successful update) and
appended to ``explorer.errors``. ``Button.on_click`` would otherwise hide it (ipywidgets#2949).
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import ipywidgets as widgets

from tinytrans import config as tconfig
from tinytrans import sizing
from tinytrans.config import ModelConfig
from tinytrans.precision import PRECISIONS
from tinytrans.widgets import data as wdata
from tinytrans.widgets import render
from tinytrans.widgets.static import SAMPLING_DEFAULTS

__all__ = [
    "AttentionExplorer",
    "Explorer",
    "LossPlot",
    "ParameterExplorer",
    "SamplingExplorer",
]

log = logging.getLogger("tinytrans.widgets")


def _wrap() -> widgets.Layout:
    """A wrapping row layout. Made per explorer, never at import: a widget created at import
    (e.g. by ``loss_plot``, which needs no widget) puts widget state into the notebook, and
    the static book would then load the widget manager from a CDN for nothing."""
    return widgets.Layout(flex_flow="row wrap", align_items="center")


def _style() -> dict[str, str]:
    return {"description_width": "initial"}


class Explorer(widgets.VBox):
    """Controls, an error panel and an HTML view; ``refresh()`` re-renders under a guard
    (the explorers of sections 1.15, 4.5 and 5.8)."""

    def __init__(self, controls: Sequence[widgets.Widget], **kwargs: Any) -> None:
        self.view = widgets.HTML()
        self.error = widgets.HTML()
        self.last_error: BaseException | None = None
        self.errors: list[BaseException] = []
        self._muted = False
        self.controls = widgets.HBox(list(controls), layout=_wrap())
        super().__init__([self.controls, self.error, self.view], **kwargs)

    # -- error handling -----------------------------------------------------------------
    def guard(self, action: Callable[[], None]) -> bool:
        """Run ``action``; on an exception show and record it. True on success."""
        try:
            action()
        except Exception as exc:  # surfaced below, never swallowed
            self.last_error = exc
            self.errors.append(exc)
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            self.error.value = render.style_tag() + (
                f'<div class="tt-explorer">{render.error_panel(str(exc), detail)}</div>'
            )
            log.error("tinytrans explorer update failed", exc_info=exc)
            return False
        self.last_error = None
        self.error.value = ""
        return True

    def refresh(self) -> bool:
        """Recompute and redraw the view (guarded)."""
        return self.guard(self.render)

    def render(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- wiring -------------------------------------------------------------------------
    def watch(
        self, controls: Sequence[widgets.Widget], action: Callable[[], None] | None = None
    ) -> None:
        """Re-render (or run ``action``) whenever one of ``controls`` changes value."""

        def on_change(_change: dict[str, Any]) -> None:
            if not self._muted:
                self.guard(action or self.render)

        for control in controls:
            control.observe(on_change, names="value")

    def on_click(self, button: widgets.Button, action: Callable[[], None]) -> None:
        button.on_click(lambda _button: self.guard(action))

    @contextlib.contextmanager
    def muted(self) -> Iterator[None]:
        """Change several controls without one re-render per change."""
        previous, self._muted = self._muted, True
        try:
            yield
        finally:
            self._muted = previous


# ----------------------------------------------------------------------------- attention


class AttentionExplorer(Explorer):
    """Prompt, layer, head (or mean / all), view and query token -> heatmaps and head stats
    (section 1.15)."""

    def __init__(
        self,
        models: Sequence[tuple[str, Any]],
        tokenizer: Any,
        prompts: Sequence[str],
        max_tokens: int = 32,
    ) -> None:
        self.models, self.tokenizer, self.max_tokens = list(models), tokenizer, max_tokens
        self._induction: dict[str, Any] = {}
        self.records: list[Any] = []
        config = self.models[0][1].config
        self.prompt = widgets.Combobox(
            value=prompts[0], options=list(prompts), description="prompt",
            ensure_option=False, continuous_update=False, style=_style(),
            layout=widgets.Layout(width="420px"),
        )  # fmt: skip
        self.layer = widgets.Dropdown(
            options=[(f"layer {i}", i) for i in range(config.n_layers)],
            value=0,
            description="layer",
        )
        heads = [(f"head {h}", h) for h in range(config.n_heads)]
        self.head = widgets.Dropdown(
            options=[*heads, ("mean of heads", "mean"), ("all heads", "all")],
            value="mean", description="head",
        )  # fmt: skip
        self.mode = widgets.Dropdown(
            options=[("weights (after softmax)", "weights"), ("scores q\u00b7k/\u221ad", "scores"),
                     ("scores \u2192 mask \u2192 softmax", "steps")],
            value="weights", description="show",
        )  # fmt: skip
        self.query = widgets.IntSlider(min=0, max=1, value=1, description="query token",
                                       continuous_update=False, style=_style())  # fmt: skip
        super().__init__([self.prompt, self.layer, self.head, self.mode, self.query])
        self.watch([self.prompt], self.load_prompt)
        self.watch([self.layer, self.head, self.mode, self.query])
        self.guard(self.load_prompt)

    def induction(self, label: str, model: Any) -> Any:
        if label not in self._induction:
            self._induction[label] = wdata.induction_scores(model)
        return self._induction[label]

    def load_prompt(self) -> None:
        """Run every model on the prompt, then point the query slider at the last token."""
        text = self.prompt.value
        self.records = [
            wdata.capture_attention(m, self.tokenizer, text, label=label,
                                    max_tokens=self.max_tokens, induction=self.induction(label, m))
            for label, m in self.models
        ]  # fmt: skip
        last = len(self.records[0].tokens) - 1
        with self.muted():
            self.query.max = max(last, 1)
            self.query.value = last
            self.query.disabled = last == 0
        self.render()

    def render(self) -> None:
        self.view.value = render.attention_view_html(
            self.records, self.layer.value, self.head.value, self.mode.value, self.query.value
        )


# ----------------------------------------------------------------------------- sampling


class SamplingExplorer(Explorer):
    """Prompt, step, method, temperature / top-k / top-p / min-p, sample N, beam width.

    ``defaults`` sets the starting controls, as for the static explorable (``temperature``,
    ``top_k``, ``top_p``, ``min_p``, ``method``, ``n``, ``seed``, ``beams``): a chapter that
    passes ``temperature=0.8, top_p=0.9`` opens the live explorer there too.

    Section 4.5."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        prompts: Sequence[str],
        n_steps: int = 8,
        defaults: dict[str, Any] | None = None,
    ) -> None:
        self.model, self.tokenizer, self.n_steps = model, tokenizer, n_steps
        self._paths: dict[str, Any] = {}
        self._trees: dict[tuple, Any] = {}
        vocab = model.config.vocab_size
        self.labels = wdata.token_labels(tokenizer, range(vocab))
        d = _sampling_defaults(defaults)
        self.prompt = widgets.Combobox(
            value=prompts[0], options=list(prompts), description="prompt", ensure_option=False,
            continuous_update=False, style=_style(), layout=widgets.Layout(width="420px"),
        )  # fmt: skip
        self.step = widgets.IntSlider(min=0, max=n_steps - 1, value=0, description="step")
        self.method = widgets.ToggleButtons(options=["greedy", "sample", "beam"], value=d["method"])
        self.temperature = widgets.FloatSlider(min=0, max=max(2, d["temperature"]), step=0.05,
                                               value=d["temperature"], description="temperature",
                                               style=_style())  # fmt: skip
        self.top_k = widgets.BoundedIntText(min=0, max=vocab, value=d["top_k"],
                                            description="top-k (0 = off)", style=_style())  # fmt: skip
        self.top_p = widgets.FloatSlider(
            min=min(0.05, d["top_p"]), max=1, step=0.01, value=d["top_p"], description="top-p"
        )
        self.min_p = widgets.FloatSlider(
            min=0, max=max(0.5, d["min_p"]), step=0.01, value=d["min_p"], description="min-p"
        )
        self.sample_n = widgets.Dropdown(options=sorted({0, 20, 100, 200, 500, 1000, d["n"]}),
                                         value=d["n"], description="sample N",
                                         style=_style())  # fmt: skip
        self.seed = widgets.IntText(
            value=d["seed"], description="seed", layout=widgets.Layout(width="140px")
        )
        self.resample = widgets.Button(description="sample again", tooltip="next seed")
        self.beams = widgets.IntSlider(
            min=1, max=max(6, d["beams"]), value=d["beams"], description="beams"
        )
        self.depth = widgets.IntSlider(
            min=1, max=8, value=4, description="beam depth", style=_style()
        )
        controls = [self.prompt, self.step, self.method, self.temperature, self.top_k, self.top_p,
                    self.min_p, self.sample_n, self.seed, self.resample, self.beams, self.depth]  # fmt: skip
        super().__init__(controls)
        self.watch([self.prompt, self.step, self.method, self.temperature, self.top_k, self.top_p,
                    self.min_p, self.sample_n, self.seed, self.beams, self.depth])  # fmt: skip
        self.on_click(self.resample, self.next_seed)
        self.refresh()

    def next_seed(self) -> None:
        self.seed.value += 1  # the observer re-renders

    def path(self) -> Any:
        text = self.prompt.value
        if text not in self._paths:
            self._paths[text] = wdata.greedy_path(self.model, self.tokenizer, text, self.n_steps)
        return self._paths[text]

    def config(self) -> Any:
        return wdata.sampling_config(
            self.method.value, self.temperature.value, self.top_k.value,
            self.top_p.value, self.min_p.value,
        )  # fmt: skip

    def tree(self, context: list[int]) -> dict[str, Any]:
        key = (tuple(context), self.beams.value, self.depth.value)
        if key not in self._trees:
            eos = getattr(self.tokenizer, "eos_id", None)
            self._trees[key] = wdata.beam_tree(
                self.model, self.tokenizer, context, self.beams.value, self.depth.value, eos
            )
        return self._trees[key]

    def render(self) -> None:
        sampling = self.method.value == "sample"
        for control in (self.temperature, self.top_k, self.top_p, self.min_p):
            control.disabled = not sampling
        path, s = self.path(), self.step.value
        n = self.sample_n.value if self.method.value != "beam" else 0
        view = wdata.sampling_view(path.logits[s], self.config(), sample_n=n, seed=self.seed.value)
        tree = self.tree(path.contexts[s]) if self.method.value == "beam" else None
        context = self.tokenizer.decode(path.contexts[s])
        self.view.value = render.sampling_view_html(
            view, self.labels, context, self.labels[path.chosen[s]], tree
        )
        self.current = view


def _sampling_defaults(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The static explorable's starting values, updated with ``overrides`` (checked)."""
    unknown = sorted(set(overrides or {}) - set(SAMPLING_DEFAULTS))
    if unknown:
        raise ValueError(
            f"unknown sampling explorer setting(s) {unknown}; the settings are "
            f"{sorted(SAMPLING_DEFAULTS)}."
        )
    return {**SAMPLING_DEFAULTS, **(overrides or {})}


# ----------------------------------------------------------------------------- sizing

_CONFIG_INTS = (
    "vocab_size",
    "d_model",
    "n_layers",
    "n_heads",
    "n_kv_heads",
    "d_ff",
    "context_length",
)
_CONFIG_CHOICES = {
    "positional": ("positions", "POSITIONAL_CHOICES"),
    "norm": ("norm", "NORM_CHOICES"),
    "norm_placement": ("placement", "PLACEMENT_CHOICES"),
    "activation": ("activation", "ACTIVATION_CHOICES"),
}


class ParameterExplorer(Explorer):
    """Architecture and training settings -> parameters, memory, FLOPs; "measure" builds the
    real model on the meta device and shows its counted parameters beside the formula
    (section 5.8)."""

    def __init__(self, config: Any) -> None:
        self.measured: int | None = None
        names = tconfig.preset_names()
        self.preset = widgets.Dropdown(
            options=(names if config.name in names else ["custom", *names]),
            value=config.name if config.name in names else "custom", description="preset",
        )  # fmt: skip
        self.fields: dict[str, widgets.Widget] = {}
        for key in _CONFIG_INTS:
            self.fields[key] = widgets.BoundedIntText(
                min=1,
                max=10**7,
                description=key,
                style=_style(),
                layout=widgets.Layout(width="170px"),
            )
        for key, (label, choices) in _CONFIG_CHOICES.items():
            self.fields[key] = widgets.Dropdown(
                options=getattr(tconfig, choices), description=label
            )
        self.fields["tie_embeddings"] = widgets.Checkbox(
            description="tied embeddings", indent=False
        )
        self.fields["bias"] = widgets.Checkbox(description="Linear biases", indent=False)
        self.batch = widgets.BoundedIntText(min=1, max=10**6, value=8, description="batch",
                                            layout=widgets.Layout(width="150px"))  # fmt: skip
        self.precision = widgets.Dropdown(
            options=[(render.PRECISION_LABELS[name], name) for name in PRECISIONS],
            value="fp32", description="precision",
        )  # fmt: skip
        self.optimizer = widgets.Dropdown(
            options=[(render.OPTIMIZER_LABELS[name], name) for name in sizing.OPTIMIZER_STATE_BYTES],
            value="adamw", description="optimizer",
        )  # fmt: skip
        self.checkpointing = widgets.Checkbox(description="activation checkpointing", indent=False)
        self.tokens = widgets.FloatText(
            value=0, description="tokens D (0 = 20/param)", style=_style()
        )
        self.device = widgets.Dropdown(options=list(sizing.PEAK_TFLOPS), description="device")
        self.mfu = widgets.FloatSlider(min=0.05, max=1, step=0.05, value=0.4, description="MFU")
        self.measure = widgets.Button(description="measure", tooltip="build on the meta device")
        self.training = [self.batch, self.precision, self.optimizer, self.checkpointing,
                         self.tokens, self.device, self.mfu]  # fmt: skip
        super().__init__([self.preset, *self.fields.values(), *self.training, self.measure])
        self.set_config(config)
        self.watch([self.preset], self.load_preset)
        self.watch(list(self.fields.values()), self.edited)
        self.watch(self.training)
        self.on_click(self.measure, self.do_measure)
        self.refresh()

    def set_config(self, config: Any) -> None:
        with self.muted():
            for key, control in self.fields.items():
                value = config.kv_heads if key == "n_kv_heads" else getattr(config, key)
                control.value = value

    def config(self) -> Any:
        """The :class:`~tinytrans.model.ModelConfig` the controls describe (validated)."""
        values = {key: control.value for key, control in self.fields.items()}
        name = self.preset.value if self.preset.value != "custom" else "custom"
        return ModelConfig(**values, name=name)

    def load_preset(self) -> None:
        if self.preset.value != "custom":
            self.set_config(ModelConfig.preset(self.preset.value))
        self.measured = None
        self.render()

    def edited(self) -> None:
        self.measured = None
        if self.preset.value != "custom":
            with self.muted():
                if "custom" not in self.preset.options:
                    self.preset.options = ["custom", *self.preset.options]
                self.preset.value = "custom"
        self.render()

    def do_measure(self) -> None:
        self.measured = wdata.measure_parameters(self.config())
        self.render()

    def figures(self) -> dict[str, Any]:
        return wdata.sizing_figures(
            self.config(), self.batch.value, self.precision.value, self.optimizer.value,
            self.checkpointing.value, self.tokens.value or None, self.device.value, self.mfu.value,
        )  # fmt: skip

    def render(self) -> None:
        config = self.config()
        self.current = self.figures()
        self.view.value = render.sizing_view_html(
            self.current, self.batch.value, config.context_length, self.device.value,
            self.mfu.value, self.measured,
        )  # fmt: skip


# ----------------------------------------------------------------------------- loss plot


class LossPlot:
    """A live loss curve for :class:`tinytrans.train.Trainer` (pass it in ``callbacks``)
    (section 3.6).

    ``on_eval(trainer, record)`` (or ``on_eval(history)``) redraws the figure; live, it updates
    one IPython display in place; static (the book build), it draws nothing until
    :meth:`show`, which displays the final figure once.
    """

    def __init__(self, static: bool = False, title: str = "loss") -> None:
        self.static, self.title = static, title
        self.history: list[dict[str, Any]] = []
        self.train_losses: list[float] = []
        self._handle: Any = None

    def on_eval(self, trainer_or_history: Any, record: dict[str, Any] | None = None) -> None:
        """Trainer hook (``on_eval(trainer, record)``) or ``on_eval(history)`` by hand."""
        history = getattr(trainer_or_history, "history", trainer_or_history)
        self.history = [dict(r) for r in history]
        self.train_losses = list(getattr(trainer_or_history, "train_losses", []) or [])
        if not self.static:
            self._update()

    def figure(self) -> Any:
        """A matplotlib figure of the train (per step, smoothed) and validation losses."""
        return render.loss_figure(self.history, self.train_losses, self.title)

    def _update(self) -> None:
        from IPython import get_ipython
        from IPython.display import Image, display

        if get_ipython() is None:
            return
        image = Image(render.figure_png(self.figure()))
        if self._handle is None:
            self._handle = display(image, display_id=True)
        else:
            self._handle.update(image)

    def show(self) -> None:
        """Display the final figure (static), or refresh the live one."""
        from IPython import get_ipython
        from IPython.display import Image, display

        if get_ipython() is None:
            return
        if self._handle is not None:
            self._update()
        else:
            self._handle = display(Image(render.figure_png(self.figure())), display_id=True)
