"""Layer 2 of the explorers: pure functions from data to HTML strings and matplotlib figures
(the attention explorer of section 1.15, the sampling explorer of section 4.5, the parameter
explorer of section 5.8 and the loss plot of section 3.6).

The live widgets put these HTML strings into an ``ipywidgets.HTML`` (no JavaScript needed, so
they work in Jupyter, VS Code, Colab and Kaggle alike); the static explorables use the
matplotlib figures as their PNG fallback. The JavaScript in ``assets/`` draws the same views
with the same palette and CSS classes.

Colours: ColorBrewer "Blues" (sequential, for probabilities) and "PuOr" (diverging, for
scores), both colour-blind safe.
"""

from __future__ import annotations

import html
import io
import itertools
import math
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

import numpy as np

from tinytrans.sizing import format_bytes, format_count, format_duration, format_flops

__all__ = [
    "BLUES",
    "CATEGORICAL",
    "FONT",
    "MASKED",
    "MEMORY_ROWS",
    "MONO",
    "OPTIMIZER_LABELS",
    "PRECISION_LABELS",
    "PUOR",
    "STAGE_COLOURS",
    "STAGE_NAMES",
    "STAT_NAMES",
    "attention_figure",
    "attention_view_html",
    "beam_table_html",
    "beam_tree_svg",
    "compute_table_html",
    "context_html",
    "cumulative_svg",
    "default_cell",
    "error_panel",
    "figure_png",
    "fmt",
    "head_stats_table",
    "heatmap_svg",
    "histogram_svg",
    "ink_for",
    "loss_figure",
    "mask_points",
    "memory_table_html",
    "metrics_html",
    "palette_colour",
    "parameter_table_html",
    "prompt_excerpt",
    "read_asset",
    "sampling_bars_html",
    "sampling_figure",
    "sampling_metrics",
    "sampling_view_html",
    "sizing_figure",
    "sizing_view_html",
    "slug",
    "smooth",
    "stacked_bar_html",
    "stat_range",
    "style_tag",
    "stylesheet",
    "token_strip_html",
]

#: ColorBrewer Blues, 9 classes (light = 0, dark = 1).
BLUES = (
    "#f7fbff", "#deebf7", "#c6dbef", "#9ecae1", "#6baed6",
    "#4292c6", "#2171b5", "#08519c", "#08306b",
)  # fmt: skip
#: ColorBrewer PuOr, 11 classes (orange = negative, white = 0, purple = positive).
PUOR = (
    "#7f3b08", "#b35806", "#e08214", "#fdb863", "#fee0b6", "#f7f7f7",
    "#d8daeb", "#b2abd2", "#8073ac", "#542788", "#2d004b",
)  # fmt: skip
#: Okabe-Ito colours for categories (components, stages).
CATEGORICAL = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442")
MASKED = "#d9d9d9"
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"
MONO = "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace"

esc = html.escape


def _hex_to_rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def palette_colour(value: float, lo: float, hi: float, palette: Sequence[str] = BLUES) -> str:
    """``value`` in [lo, hi] mapped linearly onto ``palette`` (RGB interpolation), '#rrggbb'
    (the explorers of sections 1.15, 4.5 and 5.8)."""
    if not math.isfinite(value):
        return MASKED
    span = hi - lo
    t = 0.0 if span <= 0 else min(1.0, max(0.0, (value - lo) / span))
    x = t * (len(palette) - 1)
    i = min(int(x), len(palette) - 2)
    frac = x - i
    a, b = _hex_to_rgb(palette[i]), _hex_to_rgb(palette[i + 1])
    rgb = [round(a[k] + (b[k] - a[k]) * frac) for k in range(3)]
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def ink_for(background: str) -> str:
    """Black or white text, whichever reads better on ``background`` (relative luminance)
    (the explorers of sections 1.15, 4.5 and 5.8)."""
    r, g, b = (c / 255 for c in _hex_to_rgb(background))
    return "#000000" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.5 else "#ffffff"


def fmt(value: float, digits: int = 3) -> str:
    """Fixed-point number, "-inf"/"n/a" for the special values the views show
    (the explorers of sections 1.15, 4.5 and 5.8)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if math.isinf(value):
        return "-inf" if value < 0 else "inf"
    return f"{value:.{digits}f}"


# ----------------------------------------------------------------------------- shared CSS


@cache
def read_asset(name: str) -> str:
    """Text of ``tinytrans/widgets/assets/<name>`` (package data, inlined into the HTML)
    (the explorers of sections 1.15, 4.5 and 5.8)."""
    return resources.files("tinytrans.widgets").joinpath("assets").joinpath(name).read_text("utf-8")


def stylesheet() -> str:
    """The CSS shared by live and static views (``assets/explorers.css``)
    (the explorers of sections 1.15, 4.5 and 5.8)."""
    return read_asset("explorers.css")


def style_tag() -> str:
    """The shared CSS as a ``<style>`` element, for the live views (the explorers of sections
    1.15, 4.5 and 5.8).

    Sections 1.15, 4.5 and 5.8."""
    return f"<style>{stylesheet()}</style>"


def error_panel(message: str, detail: str = "") -> str:
    """A visible error box: widgets show exceptions instead of swallowing them
    (the explorers of sections 1.15, 4.5 and 5.8)."""
    extra = f"<pre>{esc(detail)}</pre>" if detail else ""
    return (
        f'<div class="tt-error" data-testid="tt-error" role="alert"><b>Error:</b> '
        f"{esc(message)}{extra}</div>"
    )


# ----------------------------------------------------------------------------- attention


def default_cell(n_tokens: int) -> int:
    """Cell size in px: two maps of 24 tokens fit side by side in a book column (section 1.15)."""
    return max(8, min(18, 250 // max(n_tokens, 1)))


def _label_width(tokens: Sequence[str], char_px: float = 7.2) -> int:
    return int(max((len(t) for t in tokens), default=1) * char_px) + 10


def heatmap_svg(
    matrix: np.ndarray,
    tokens: Sequence[str],
    *,
    kind: str = "weights",
    mask: bool = True,
    cell: int | None = None,
    labels: bool = True,
    title: str = "",
    vmax: float | None = None,
    testid: str = "tt-heatmap",
) -> str:
    """A (T, T) attention map as SVG: rows = queries, columns = keys, the causal upper
    triangle hatched grey when ``mask``. ``kind="weights"`` uses Blues on [0, 1];
    ``kind="scores"`` uses PuOr centred on 0. Each cell has a tooltip with its value
    (section 1.15)."""
    T = len(tokens)
    cell = cell or default_cell(T)
    left = _label_width(tokens) if labels else 0
    top = (_label_width(tokens) if labels and max(map(len, tokens)) > 1 else 16) if labels else 0
    top += 18 if title else 0
    size = cell * T
    lo, hi, palette = _scale(matrix, kind, mask, vmax)
    parts = [
        f'<svg class="tt-heatmap" data-testid="{esc(testid)}" data-kind="{kind}" '
        f'width="{left + size + 2}" height="{top + size + 2}" role="img" '
        f'aria-label="{esc(title or "attention map")}" xmlns="http://www.w3.org/2000/svg">'
    ]
    if title:
        parts.append(f'<text class="tt-title" x="{left}" y="13">{esc(title)}</text>')
    if labels:
        parts.append(_key_labels(tokens, left, top, cell))
    if mask and T > 1:
        parts.append(_masked_triangle(T, left, top, cell))
    for q in range(T):
        parts.append(_heatmap_row(matrix, tokens, q, left, top, cell, kind, mask, lo, hi, palette))
    parts.append(
        f'<rect x="{left}" y="{top}" width="{size}" height="{size}" fill="none" '
        'stroke="#888" stroke-width="0.6"/></svg>'
    )
    return "".join(parts)


def _scale(matrix, kind, mask, vmax) -> tuple[float, float, Sequence[str]]:
    if kind == "weights":
        return 0.0, vmax or 1.0, BLUES
    values = np.tril(matrix) if mask else matrix
    limit = vmax or float(np.nanmax(np.abs(values))) or 1.0
    return -limit, limit, PUOR


_pattern_ids = itertools.count()


def mask_points(T: int, left: float, top: float, cell: float) -> str:
    """Polygon points of the staircase above the diagonal (keys in the future) (section 1.15)."""
    size = T * cell
    points = [(size, 0), (size, (T - 1) * cell)]
    for j in range(T - 1, 0, -1):
        points += [(j * cell, j * cell), (j * cell, (j - 1) * cell)]
    return " ".join(f"{left + x:g},{top + y:g}" for x, y in points)


def _masked_triangle(T: int, left: int, top: int, cell: int) -> str:
    """The causal mask drawn as one hatched polygon (the JS draws the same)."""
    pid = f"tt-hatch-py{next(_pattern_ids)}"
    return (
        f'<defs><pattern id="{pid}" width="5" height="5" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="5" height="5" fill="#f2f2f2"/>'
        '<line x1="0" y1="0" x2="0" y2="5" stroke="#c4c4c4" stroke-width="1.6"/></pattern>'
        f'</defs><polygon class="tt-masked" points="{mask_points(T, left, top, cell)}" '
        f'fill="url(#{pid})"><title>masked: a query cannot see future keys</title></polygon>'
    )


def _key_labels(tokens: Sequence[str], left: int, top: int, cell: int) -> str:
    rotate = max(map(len, tokens)) > 1
    out = [f'<g style="font-size:{min(11, cell + 1)}px">']
    for k, tok in enumerate(tokens):
        x = left + k * cell + cell / 2
        if rotate:
            out.append(
                f'<text class="tt-label" x="{x:.1f}" y="{top - 4}" '
                f'transform="rotate(-60 {x:.1f} {top - 4})">{esc(tok)}</text>'
            )
        else:
            out.append(
                f'<text class="tt-label" x="{x:.1f}" y="{top - 4}" '
                f'text-anchor="middle">{esc(tok)}</text>'
            )
    for q, tok in enumerate(tokens):
        y = top + q * cell + cell / 2 + min(11, cell + 1) * 0.35
        out.append(
            f'<text class="tt-label" x="{left - 4}" y="{y:.1f}" text-anchor="end">{esc(tok)}</text>'
        )
    out.append("</g>")
    return "".join(out)


def _heatmap_row(matrix, tokens, q, left, top, cell, kind, mask, lo, hi, palette) -> str:
    cells = [f'<g class="tt-row" data-q="{q}">']
    for k in range(len(tokens)):
        x, y = left + k * cell, top + q * cell
        if mask and k > q:
            continue
        value = float(matrix[q, k])
        tip = f"query {q} {tokens[q]!r} \u2192 key {k} {tokens[k]!r}: {fmt(value)}"
        cells.append(
            f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" '
            f'fill="{palette_colour(value, lo, hi, palette)}"><title>{esc(tip)}</title></rect>'
        )
    cells.append("</g>")
    return "".join(cells)


def token_strip_html(tokens: Sequence[str], weights: np.ndarray, query: int) -> str:
    """The prompt with each key token shaded by how much ``query`` attends to it (section 1.15)."""
    spans = []
    for k, tok in enumerate(tokens):
        if k > query:
            spans.append(f'<span class="tt-tok tt-future">{esc(tok)}</span>')
            continue
        bg = palette_colour(float(weights[query, k]), 0.0, 1.0)
        cls = "tt-tok tt-query" if k == query else "tt-tok"
        spans.append(
            f'<span class="{cls}" style="background:{bg};color:{ink_for(bg)}" '
            f'title="{fmt(float(weights[query, k]))}">{esc(tok)}</span>'
        )
    return f'<div class="tt-strip" data-testid="tt-strip">{"".join(spans)}</div>'


STAT_NAMES = {
    "entropy": "entropy (nats)",
    "previous": "previous token",
    "first": "first token",
    "induction": "induction",
}


def stat_range(key: str, n_tokens: int) -> float:
    """Upper end of a statistic's colour scale: ln(T) for entropy (uniform attention over the
    longest row), 1 for the weight-based scores (section 1.15)."""
    return math.log(max(n_tokens, 2)) if key == "entropy" else 1.0


def head_stats_table(record: Any, layer: int | None = None, head: int | str | None = None) -> str:
    """Per-head statistics as small layer x head grids, one per statistic, shaded by value
    (section 1.15)."""
    grids = []
    for key, name in STAT_NAMES.items():
        values = record.stats[key]
        top = stat_range(key, len(record.tokens))
        heads = "".join(f"<th>H{h}</th>" for h in range(record.n_heads))
        rows = []
        for L in range(record.n_layers):
            cells = []
            for H in range(record.n_heads):
                value = float(values[L, H])
                bg = palette_colour(value, 0.0, top)
                chosen = " tt-selected" if layer == L and head == H else ""
                cells.append(
                    f'<td class="tt-statcell{chosen}" data-stat="{key}" data-layer="{L}" '
                    f'data-head="{H}" style="background:{bg};color:{ink_for(bg)}">{fmt(value, 2)}</td>'
                )
            rows.append(f"<tr><th>L{L}</th>{''.join(cells)}</tr>")
        grids.append(
            f'<table class="tt-table tt-mini"><caption>{esc(name)}</caption><thead><tr><th></th>'
            f"{heads}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
    return (
        f'<div class="tt-stats" data-testid="tt-head-stats"><div class="tt-caption">'
        f"<b>{esc(record.label)}</b>: per-head statistics, mean over queries (rows = layers, "
        f'columns = heads)</div><div class="tt-statgrid">{"".join(grids)}</div></div>'
    )


def attention_view_html(
    records: Sequence[Any],
    layer: int,
    head: int | str,
    view: str = "weights",
    query: int | None = None,
) -> str:
    """The whole attention view for one prompt: one panel per model (side by side when
    comparing), a token strip for ``query`` and the per-head statistics tables (section 1.15)."""
    panels = [_attention_panel(r, layer, head, view, query) for r in records]
    tables = "".join(head_stats_table(r, layer, head) for r in records)
    return (
        f'<div class="tt-explorer tt-attention">{style_tag()}'
        f'<div class="tt-panels">{"".join(panels)}</div>'
        f"{_attention_legend(view)}<div>{tables}</div></div>"
    )


def _attention_panel(record: Any, layer: int, head: int | str, view: str, query) -> str:
    tokens = record.tokens
    q = len(tokens) - 1 if query is None else min(int(query), len(tokens) - 1)
    if head == "all":
        cells = max(4, min(10, 160 // len(tokens)))
        grid = "".join(
            f'<figure class="tt-small"><figcaption>L{layer} H{h}</figcaption>'
            f"{heatmap_svg(record.matrix(layer, h), tokens, cell=cells, labels=False)}</figure>"
            for h in range(record.n_heads)
        )
        body = f'<div class="tt-grid">{grid}</div>'
    elif view == "steps":
        scores = record.matrix(layer, head, "scores")
        body = (
            '<div class="tt-steps">'
            + "".join(
                (
                    heatmap_svg(
                        scores, tokens, kind="scores", mask=False, title="1. q\u00b7k/\u221ad"
                    ),
                    heatmap_svg(
                        scores, tokens, kind="scores", title="2. causal mask (\u2212\u221e)"
                    ),
                    heatmap_svg(record.matrix(layer, head), tokens, title="3. softmax per row"),
                )
            )
            + "</div>"
        )
    else:
        kind = "scores" if view == "scores" else "weights"
        body = heatmap_svg(record.matrix(layer, head, kind), tokens, kind=kind)
    weights = record.matrix(layer, head if head != "all" else "mean")
    name = "mean of heads" if head == "mean" else ("all heads" if head == "all" else f"head {head}")
    return (
        f'<section class="tt-panel" data-testid="tt-panel"><h4>{esc(record.label)} \u00b7 '
        f"layer {layer} \u00b7 {name}</h4>{body}"
        f'<div class="tt-caption">query {q} ({esc(tokens[q])}) attends to:</div>'
        f"{token_strip_html(tokens, weights, q)}</section>"
    )


def _attention_legend(view: str) -> str:
    weights = _gradient(BLUES, "0", "1", "attention weight")
    scores = _gradient(PUOR, "\u2212", "+", "score q\u00b7k/\u221ad")
    legend = weights if view == "weights" else weights + scores
    return (
        f'<div class="tt-legend">{legend}<span><i class="tt-swatch tt-masked-swatch"></i>'
        "masked (future)</span></div>"
    )


def _gradient(palette: Sequence[str], lo: str, hi: str, name: str) -> str:
    stops = ",".join(palette)
    return (
        f'<span>{esc(name)}: {lo} <i class="tt-ramp" style="background:linear-gradient('
        f'90deg,{stops})"></i> {hi}</span>'
    )


# ----------------------------------------------------------------------------- matplotlib


def prompt_excerpt(text: str, width: int = 40) -> str:
    """The end of a prompt for a figure title, on one line: ``'…To be, or not to be'``
    (the explorers of sections 1.15, 4.5 and 5.8).

    Cut at a word boundary (never mid-word) and with newlines shown as ``\\n``, so a title
    does not start with half a word or wrap in the middle."""
    if len(text) > width:
        tail = text[-width:]
        space = next((i for i, ch in enumerate(tail) if ch.isspace()), None)
        starts_a_word = text[-width - 1].isspace()
        if not starts_a_word and space is not None and space < width // 2:
            tail = tail[space + 1 :]
        text = "\u2026" + tail
    return text.replace("\n", "\\n")


def figure_png(fig: Any, dpi: int = 110) -> bytes:
    """PNG bytes of a matplotlib figure (closed afterwards so notebooks don't show it twice)
    (the explorers of sections 1.15, 4.5 and 5.8)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return buffer.getvalue()


def _cmap(name: str):
    from matplotlib.colors import LinearSegmentedColormap

    cmap = LinearSegmentedColormap.from_list(name, BLUES if name == "blues" else PUOR)
    return cmap.with_extremes(bad=(0, 0, 0, 0))  # masked cells show the hatched background


def attention_figure(records: Sequence[Any], layer: int = 0, head: int | str = "mean") -> Any:
    """Matplotlib heatmaps of one layer/head per model (the static explorer's fallback)
    (section 1.15)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(records), figsize=(4.6 * len(records), 4.4), squeeze=False)
    for ax, record in zip(axes[0], records, strict=True):
        matrix = record.matrix(layer, head).astype(float)
        matrix[np.triu_indices_from(matrix, 1)] = np.nan
        ax.set_facecolor("#f2f2f2")
        ax.patch.set_hatch("////")
        ax.patch.set_edgecolor("#c4c4c4")
        image = ax.imshow(matrix, cmap=_cmap("blues"), vmin=0, vmax=1)
        ticks = range(len(record.tokens))
        ax.set_xticks(ticks, record.tokens, fontsize=7, fontfamily="monospace")
        ax.set_yticks(ticks, record.tokens, fontsize=7, fontfamily="monospace")
        ax.set_xlabel("key (attended to)")
        ax.set_ylabel("query")
        name = "mean of heads" if head == "mean" else f"head {head}"
        ax.set_title(f"{record.label}: layer {layer}, {name}", fontsize=10)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="attention weight")
    return fig


# ----------------------------------------------------------------------------- sampling

STAGE_COLOURS = {"base": "#999999", "tempered": "#E69F00", "final": "#0072B2"}
STAGE_NAMES = {"base": "model (T = 1)", "tempered": "after temperature", "final": "after filters"}


def context_html(context_text: str, next_label: str | None = None, limit: int = 90) -> str:
    """The tail of the context with the reference next token marked (section 4.5)."""
    tail = context_text[-limit:]
    shown = ("\u2026" if len(context_text) > limit else "") + tail
    nxt = (
        f'<span class="tt-next" title="greedy next token">{esc(next_label)}</span>'
        if next_label
        else ""
    )
    return f'<div class="tt-context" data-testid="tt-context">{esc(shown)}{nxt}</div>'


def metrics_html(items: Sequence[tuple[str, str, str]]) -> str:
    """Big numbers with small captions: (testid, value, caption) (section 4.5)."""
    cells = "".join(
        f'<div class="tt-metric"><b data-testid="{esc(t)}">{esc(v)}</b><span>{esc(c)}</span></div>'
        for t, v, c in items
    )
    return f'<div class="tt-metrics">{cells}</div>'


def sampling_metrics(view: Any, vocab_size: int) -> str:
    """Entropy before and after the filters, effective vocabulary and tokens kept (section 4.5)."""
    return metrics_html(
        [
            ("tt-entropy-base", fmt(view.entropy_base, 3), "entropy at T = 1 (nats)"),
            ("tt-entropy", fmt(view.entropy_final, 3), "entropy after filters (nats)"),
            ("tt-effective", fmt(view.effective_vocab, 2), "effective vocabulary exp(H)"),
            ("tt-kept", f"{view.num_kept} / {vocab_size}", "tokens kept"),
        ]
    )


def _bar(value: float, colour: str, stage: str, token: int, dim: bool = False) -> str:
    width = max(0.0, min(1.0, value)) * 100
    cls = ' class="tt-dim"' if dim else ""
    return (
        f'<td{cls} data-stage="{stage}" data-token="{token}" data-value="{value!r}">'
        f'<div class="tt-bar"><i style="width:{width:.2f}%;background:{colour}"></i>'
        f"<span>{fmt(value, 4)}</span></div></td>"
    )


def sampling_bars_html(view: Any, labels: Sequence[str], n: int = 12) -> str:
    """One row per top token: probability at T = 1, after temperature, after filters; rows
    of dropped tokens are dimmed; the sample-N frequency when there is one (section 4.5)."""
    head = "".join(f"<th>{STAGE_NAMES[s]}</th>" for s in STAGE_COLOURS)
    if view.counts is not None:
        head += f"<th>sampled ({int(view.counts.sum())})</th>"
    rows = []
    for token in view.top_tokens(n):
        dropped = not bool(view.kept[token])
        cells = "".join(
            _bar(float(getattr(view, s)[token]), c, s, token, dim=dropped and s == "final")
            for s, c in STAGE_COLOURS.items()
        )
        if view.counts is not None:
            total = max(int(view.counts.sum()), 1)
            cells += _bar(view.counts[token] / total, "#56B4E9", "sampled", token)
        cls = "tt-dropped" if dropped else ""
        rows.append(
            f'<tr class="{cls}" data-token="{token}"><td class="tt-tokcell">'
            f"{esc(labels[token])}</td>{cells}</tr>"
        )
    return (
        '<table class="tt-table tt-bars" data-testid="tt-bars"><caption>Top tokens '
        "(dimmed: removed by the filters)</caption><thead><tr><th>token</th>"
        f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def cumulative_svg(view: Any, width: int = 300, height: int = 180, max_rank: int = 100) -> str:
    """Cumulative probability of the ranked tokens, the top-p line and the cut-off (section 4.5)."""
    curve = view.curve[:max_rank]
    n = len(curve)
    pad_l, pad_b, pad_t = 34, 28, 24
    w, h = width - pad_l - 8, height - pad_b - pad_t

    def xy(i: int, v: float) -> tuple[float, float]:
        return pad_l + (i + 1) / n * w, pad_t + (1 - v) * h

    points = " ".join("{:.1f},{:.1f}".format(*xy(i, float(v))) for i, v in enumerate(curve))
    parts = [
        f'<svg class="tt-curve" data-testid="tt-curve" width="{width}" height="{height}" '
        'xmlns="http://www.w3.org/2000/svg">',
        f'<text class="tt-title" x="0" y="12">cumulative probability ({esc(view.curve_stage)})</text>',
        _axes(pad_l, pad_t, w, h, n),
        f'<polyline points="{points}" fill="none" stroke="#0072B2" stroke-width="1.8"/>',
    ]
    if view.p_kept is not None:
        cut = view.p_kept
        _, y = xy(0, view.top_p)
        parts.append(
            f'<line x1="{pad_l}" x2="{pad_l + w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#D55E00" '
            f'stroke-dasharray="4 3"/><text class="tt-axis" x="{pad_l + w}" y="{y - 3:.1f}" '
            f'text-anchor="end" fill="#D55E00">p = {view.top_p:.2f}</text>'
        )
        if cut <= n:
            x, _ = xy(cut - 1, 0)
            parts.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{pad_t}" y2="{pad_t + h}" stroke="#D55E00"/>'
                f'<text class="tt-axis" x="{x + 3:.1f}" y="{pad_t + h - 4}" fill="#D55E00" '
                f'data-testid="tt-cut">{cut} kept</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _axes(left: float, top: float, w: float, h: float, n: int) -> str:
    ticks = "".join(
        f'<text class="tt-axis" x="{left - 4}" y="{top + (1 - v) * h + 4:.1f}" '
        f'text-anchor="end">{v:g}</text><line x1="{left}" x2="{left + w}" '
        f'y1="{top + (1 - v) * h:.1f}" y2="{top + (1 - v) * h:.1f}" stroke="#eaeef2"/>'
        for v in (0, 0.5, 1)
    )
    return (
        f'{ticks}<line x1="{left}" x2="{left}" y1="{top}" y2="{top + h}" stroke="#8c959f"/>'
        f'<line x1="{left}" x2="{left + w}" y1="{top + h}" y2="{top + h}" stroke="#8c959f"/>'
        f'<text class="tt-axis" x="{left + w / 2}" y="{top + h + 22}" text-anchor="middle">'
        f"tokens ranked by probability (1\u2013{n})</text>"
    )


def histogram_svg(view: Any, labels: Sequence[str], n: int = 12, width: int = 360) -> str:
    """Sampled frequencies (bars) against the theoretical probabilities (ticks) (section 4.5)."""
    if view.counts is None:
        return ""
    order = [i for i in np.argsort(-view.final, kind="stable")[:n] if view.final[i] > 0]
    total = max(int(view.counts.sum()), 1)
    height, pad_l, pad_t, bar_h = 22 * len(order) + 30, 60, 20, 16
    scale = width - pad_l - 50
    top = max(max(view.final[i] for i in order), max(view.counts[i] / total for i in order))
    parts = [
        f'<svg class="tt-hist" data-testid="tt-hist" width="{width}" height="{height}" '
        f'xmlns="http://www.w3.org/2000/svg"><text class="tt-title" x="0" y="12">{total} '
        "samples (bars) vs theory (\u2502)</text>"
    ]
    for row, i in enumerate(order):
        y = pad_t + row * 22
        freq, prob = view.counts[i] / total, float(view.final[i])
        parts.append(
            f'<text class="tt-label" x="{pad_l - 6}" y="{y + 12}" text-anchor="end">'
            f"{esc(labels[i])}</text>"
            f'<rect x="{pad_l}" y="{y}" width="{freq / top * scale:.1f}" height="{bar_h}" '
            f'fill="#56B4E9" data-token="{i}" data-count="{int(view.counts[i])}"/>'
            f'<line x1="{pad_l + prob / top * scale:.1f}" x2="{pad_l + prob / top * scale:.1f}" '
            f'y1="{y - 2}" y2="{y + bar_h + 2}" stroke="#000" stroke-width="2"/>'
            f'<text class="tt-axis" x="{pad_l + scale + 6}" y="{y + 12}">{int(view.counts[i])}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def beam_tree_svg(tree: dict[str, Any], context_label: str = "context") -> str:
    """The beam-search tree: one column per step, candidates with cumulative log-probability,
    kept beams solid, pruned ones dashed and faded, finished ones green (section 4.5)."""
    col, row_h, node_w, node_h = 150, 26, 118, 20
    n_rows = max((len(s) for s in tree["steps"]), default=1)
    width, height = 70 + col * len(tree["steps"]) + 10, 24 + row_h * n_rows
    parts = [
        f'<svg class="tt-beam" data-testid="tt-beam" width="{width}" height="{height}" '
        'xmlns="http://www.w3.org/2000/svg">'
        f'<text class="tt-axis" x="0" y="{24 + node_h / 2 + 4}">{esc(context_label)}</text>'
    ]
    parent_y = [24 + node_h / 2]
    for s, candidates in enumerate(tree["steps"]):
        x = 70 + s * col
        kept_y = []
        for r, c in enumerate(candidates):
            y = 24 + r * row_h
            py = parent_y[min(c["parent"], len(parent_y) - 1)]
            px = 70 + (s - 1) * col + node_w if s else 56
            parts.append(_beam_edge(px, py, x, y + node_h / 2, c["status"]))
            parts.append(_beam_node(x, y, node_w, node_h, c, s))
            if c["status"] == "kept":
                kept_y.append(y + node_h / 2)
        parent_y = kept_y or parent_y
    parts.append("</svg>")
    return "".join(parts)


_BEAM_STYLE = {
    "kept": ("#0072B2", "#e8f1fa", ""),
    "pruned": ("#8c959f", "#ffffff", ' stroke-dasharray="3 2" opacity="0.55"'),
    "finished": ("#009E73", "#e6f5ef", ""),
}


def _beam_edge(x1: float, y1: float, x2: float, y2: float, status: str) -> str:
    stroke, _, extra = _BEAM_STYLE[status]
    mid = (x1 + x2) / 2
    return (
        f'<path d="M{x1:.1f},{y1:.1f} C{mid:.1f},{y1:.1f} {mid:.1f},{y2:.1f} {x2:.1f},{y2:.1f}" '
        f'fill="none" stroke="{stroke}" stroke-width="1.2"{extra}/>'
    )


def _beam_node(x: float, y: float, w: float, h: float, c: dict[str, Any], step: int) -> str:
    stroke, fill, extra = _BEAM_STYLE[c["status"]]
    return (
        f'<g data-step="{step}" data-status="{c["status"]}" data-logp="{c["log_prob"]}"{extra}>'
        f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="4" fill="{fill}" stroke="{stroke}"/>'
        f'<text class="tt-label" x="{x + 6}" y="{y + 14}">{esc(c["label"])}</text>'
        f'<text class="tt-axis" x="{x + w - 6}" y="{y + 14}" text-anchor="end">'
        f"{c['log_prob']:.3f}</text><title>{esc(c['status'])}: cumulative log p = "
        f"{c['log_prob']:.4f}</title></g>"
    )


def beam_table_html(tree: dict[str, Any]) -> str:
    """The best beams as a table: continuation, log-probability and length-normalised score
    (section 4.5)."""
    rows = "".join(
        f'<tr><td>{i + 1}</td><td class="tt-tokcell">{esc(b["text"])}</td>'
        f'<td data-testid="tt-beam-logp">{b["log_prob"]:.4f}</td><td>{b["score"]:.4f}</td></tr>'
        for i, b in enumerate(tree["best"])
    )
    return (
        f'<table class="tt-table" data-testid="tt-beams"><caption>{tree["num_beams"]} best beams '
        "(score = log p / length)</caption><thead><tr><th>#</th><th>continuation</th>"
        f"<th>log p</th><th>score</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def sampling_view_html(
    view: Any,
    labels: Sequence[str],
    context_text: str,
    next_label: str | None,
    tree: dict[str, Any] | None = None,
) -> str:
    """The whole sampling view (live widget): context, metrics, bars, curve, histogram, tree
    (section 4.5)."""
    parts = [
        f'<div class="tt-explorer tt-sampling">{style_tag()}',
        context_html(context_text, next_label),
        sampling_metrics(view, len(view.base)),
        f'<div class="tt-row2">{sampling_bars_html(view, labels)}<div>{cumulative_svg(view)}'
        f"{histogram_svg(view, labels)}</div></div>",
    ]
    if tree is not None:
        parts.append(f"<h4>Beam search ({tree['num_beams']} beams)</h4>")
        parts.append(beam_tree_svg(tree) + beam_table_html(tree))
    parts.append(_sampling_legend() + "</div>")
    return "".join(parts)


def _sampling_legend() -> str:
    swatches = "".join(
        f'<span><i class="tt-swatch" style="background:{c}"></i>{STAGE_NAMES[s]}</span>'
        for s, c in STAGE_COLOURS.items()
    )
    return (
        f'<div class="tt-legend">{swatches}<span>order: temperature \u2192 top-k \u2192 top-p '
        "\u2192 min-p \u2192 renormalise</span></div>"
    )


def sampling_figure(view: Any, labels: Sequence[str], title: str = "") -> Any:
    """Matplotlib version of the bars (the static explorer's PNG) (section 4.5)."""
    import matplotlib.pyplot as plt

    tokens = view.top_tokens(12)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    y = np.arange(len(tokens))
    for offset, (stage, colour) in zip((-0.27, 0.0, 0.27), STAGE_COLOURS.items(), strict=True):
        values = getattr(view, stage)[tokens]
        ax.barh(y + offset, values, height=0.26, color=colour, label=STAGE_NAMES[stage])
    ax.set_yticks(y, [labels[t] for t in tokens], fontfamily="monospace")
    ax.invert_yaxis()
    ax.set_xlabel("probability")
    ax.set_title(title or "next-token distribution", fontsize=10)
    ax.legend(frameon=False, fontsize=8, loc="lower right")
    ax.spines[["top", "right"]].set_visible(False)
    return fig


# ----------------------------------------------------------------------------- sizing

#: How the explorers name the training recipes of :mod:`tinytrans.precision` (section 5.4).
PRECISION_LABELS = {
    "fp32": "fp32",
    "bf16-mixed": "bf16 mixed (autocast)",
    "fp16-mixed": "fp16 mixed (autocast)",
    "bf16-true": "pure bf16",
}
#: How the explorers name the optimizers of :data:`tinytrans.sizing.OPTIMIZER_STATE_BYTES`.
OPTIMIZER_LABELS = {"adamw": "AdamW", "sgd-momentum": "SGD + momentum", "sgd": "plain SGD"}

MEMORY_ROWS = (
    ("weights", "weights"),
    ("gradients", "gradients"),
    ("optimizer", "optimizer states"),
    ("master_weights", "fp32 master weights"),
    ("activations", "activations (saved for backward)"),
)


def slug(text: str) -> str:
    """``text`` as a lower-case, dash-separated id for ``data-testid`` attributes (section 5.8)."""
    return "-".join(text.lower().replace("/", " ").split())


def stacked_bar_html(parts: Sequence[tuple[str, float]], testid: str) -> str:
    """A 100%-wide horizontal bar split into coloured segments, with a legend (section 5.8)."""
    total = sum(v for _, v in parts) or 1.0
    segments, legend = [], []
    for i, (name, value) in enumerate(parts):
        if not value:
            continue  # keep each component's colour fixed: skip, don't re-index
        colour = CATEGORICAL[i % len(CATEGORICAL)]
        share = value / total * 100
        segments.append(
            f'<i style="width:{share:.3f}%;background:{colour}" title="{esc(name)}: {share:.1f}%"></i>'
        )
        legend.append(
            f'<span><i class="tt-swatch" style="background:{colour}"></i>{esc(name)} '
            f"{share:.1f}%</span>"
        )
    return (
        f'<div class="tt-stack" data-testid="{testid}">{"".join(segments)}</div>'
        f'<div class="tt-legend">{"".join(legend)}</div>'
    )


def _row(label: str, testid: str, value: float, shown: str, extra: str = "") -> str:
    return (
        f'<tr><td>{esc(label)}</td><td data-testid="{testid}" data-value="{value!r}">'
        f"{esc(shown)}</td><td>{extra}</td></tr>"
    )


def parameter_table_html(figures: dict[str, Any]) -> str:
    """Parameters per component (count, share) and the total (section 5.8)."""
    rows = []
    for r in figures["breakdown"]:
        total = r["component"] == "total"
        per_layer = "" if r["per_layer"] is None else f"{r['per_layer']:,}"
        rows.append(
            f'<tr class="{"tt-total" if total else ""}"><td>{esc(r["component"])}</td>'
            f'<td>{per_layer}</td><td data-testid="tt-param-{slug(r["component"])}" '
            f'data-value="{r["count"]}">{r["count"]:,}</td><td>{format_count(r["count"])}</td>'
            f'<td>{r["share"] * 100:.1f}%</td><td class="tt-note">{esc(r["note"])}</td></tr>'
        )
    return (
        '<table class="tt-table" data-testid="tt-params"><caption>Parameters</caption><thead>'
        "<tr><th>component</th><th>per layer</th><th>count</th><th></th><th>share</th><th></th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def memory_table_html(figures: dict[str, Any], batch: int, context: int) -> str:
    """Training memory by kind plus inference weights and KV cache (section 5.8)."""
    mem = figures["memory"]
    rows = [
        _row(name, f"tt-mem-{key}", mem[key], format_bytes(mem[key])) for key, name in MEMORY_ROWS
    ]
    rows.append(
        f'<tr class="tt-total"><td>training total</td><td data-testid="tt-mem-total" '
        f'data-value="{mem["total"]}">{format_bytes(mem["total"])}</td><td></td></tr>'
    )
    rows.append(
        _row(f"inference weights ({figures['dtype']})", "tt-mem-inference",
             figures["weights_inference"], format_bytes(figures["weights_inference"]))
    )  # fmt: skip
    rows.append(
        _row(f"KV cache (batch {batch} \u00d7 {context} tokens)", "tt-kv-cache",
             figures["kv_cache"], format_bytes(figures["kv_cache"]))
    )  # fmt: skip
    return (
        '<table class="tt-table" data-testid="tt-memory"><caption>Memory</caption><thead><tr>'
        f"<th>what</th><th>bytes</th><th></th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def compute_table_html(figures: dict[str, Any], device: str, mfu: float) -> str:
    """FLOPs per token, total training compute (config-exact and 6ND) and wall-clock time
    (section 5.8)."""
    f = figures
    rows = [
        _row("forward FLOPs / token", "tt-flops-forward", f["forward_flops_per_token"],
             format_flops(f["forward_flops_per_token"])),
        _row("training FLOPs / token (3\u00d7 forward)", "tt-flops-train-token",
             f["training_flops_per_token"], format_flops(f["training_flops_per_token"])),
        _row("training tokens D", "tt-tokens", f["tokens"], format_count(f["tokens"]),
             f"Chinchilla: {format_count(f['chinchilla_tokens'])}"),
        _row("training compute", "tt-flops-train", f["training_flops"],
             format_flops(f["training_flops"])),
        _row("6ND", "tt-six-nd", f["six_nd"], format_flops(f["six_nd"])),
        _row(f"time on {device} at {mfu:.0%} MFU", "tt-time", f["training_seconds"],
             format_duration(f["training_seconds"])),
        _row("Chinchilla-fit loss", "tt-loss", f["predicted_loss"], f"{f['predicted_loss']:.2f} nats"),
    ]  # fmt: skip
    return (
        '<table class="tt-table" data-testid="tt-compute"><caption>Compute</caption><thead><tr>'
        f"<th>what</th><th>value</th><th></th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def sizing_view_html(
    figures: dict[str, Any],
    batch: int,
    context: int,
    device: str,
    mfu: float,
    measured: int | None = None,
) -> str:
    """The whole parameter/memory/FLOPs view (live widget) (section 5.8)."""
    params = [(r["component"], r["count"]) for r in figures["breakdown"][:-1]]
    mem = figures["memory"]
    memory = [(name, mem[key]) for key, name in MEMORY_ROWS]
    check = ""
    if measured is not None:
        same = "equals" if measured == figures["parameters"] else "DIFFERS FROM"
        check = (
            f'<p class="tt-note" data-testid="tt-measured" data-value="{measured}">Built on the '
            f"meta device: {measured:,} parameters ({same} the formula).</p>"
        )
    return (
        f'<div class="tt-explorer tt-sizing">{style_tag()}'
        f'<div class="tt-row2"><div>{parameter_table_html(figures)}'
        f"{stacked_bar_html(params, 'tt-param-bar')}{check}</div>"
        f"<div>{memory_table_html(figures, batch, context)}"
        f"{stacked_bar_html(memory, 'tt-mem-bar')}</div>"
        f"<div>{compute_table_html(figures, device, mfu)}</div></div></div>"
    )


def sizing_figure(figures: dict[str, Any], title: str = "") -> Any:
    """Matplotlib: parameters by component and training memory by kind (static PNG)
    (section 5.8)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(7.5, 3.4))
    params = [(r["component"], r["count"]) for r in figures["breakdown"][:-1]]
    mem = figures["memory"]
    memory = [(name, mem[key]) for key, name in MEMORY_ROWS]
    labels = (f"parameters: {format_count(figures['parameters'])}",
              f"training memory: {format_bytes(mem['total'])}")  # fmt: skip
    for ax, parts, label in zip(axes, (params, memory), labels, strict=True):
        total, left = sum(v for _, v in parts), 0.0
        for i, (name, value) in enumerate(parts):
            if not value:
                continue
            ax.barh(0, value / total, left=left, color=CATEGORICAL[i % 7], label=name)
            left += value / total
        ax.set_xlim(0, 1)
        # Shares of one bar: no axis ticks, so the legend below cannot run into them.
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(label, fontsize=9, loc="left")
        ax.legend(ncol=3, fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(0, -0.05))
        ax.spines[["top", "right", "left", "bottom"]].set_visible(False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- loss plot


def smooth(values: Sequence[float], alpha: float = 0.1) -> list[float]:
    """Exponential moving average with bias correction (the first points are not dragged to 0)
    (section 3.6)."""
    out, avg = [], 0.0
    for i, v in enumerate(values, start=1):
        avg = (1 - alpha) * avg + alpha * float(v)
        out.append(avg / (1 - (1 - alpha) ** i))
    return out


def loss_figure(
    history: Sequence[dict[str, Any]], train_losses: Sequence[float] = (), title: str = "loss"
) -> Any:
    """Training loss per step (faint raw, bold smoothed) and validation loss per evaluation
    (section 3.6)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    if train_losses:
        steps = range(1, len(train_losses) + 1)
        ax.plot(steps, train_losses, color=CATEGORICAL[0], alpha=0.25, lw=0.8)
        ax.plot(steps, smooth(train_losses), color=CATEGORICAL[0], lw=1.8, label="train (smoothed)")
    else:
        points = [(r["step"], r["train_loss"]) for r in history if r.get("train_loss") is not None]
        if points:
            ax.plot(*zip(*points, strict=True), color=CATEGORICAL[0], lw=1.8, label="train")
    val = [(r["step"], r["val_loss"]) for r in history if r.get("val_loss") is not None]
    if val:
        ax.plot(
            *zip(*val, strict=True), "o-", color=CATEGORICAL[1], lw=1.8, ms=4, label="validation"
        )
        best = min(val, key=lambda p: p[1])
        ax.annotate(
            f"best {best[1]:.3f}", best, textcoords="offset points", xytext=(6, 8), fontsize=8
        )
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats / token)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(frameon=False)
    return fig
