"""The built book in a real browser: the static explorables on the "Explorers" page.

Serves ``_build/html`` (built by ``make book``) on 127.0.0.1, drives every explorable in
headless Chromium (Debian's ``/usr/bin/chromium`` via Playwright; never a downloaded browser),
and checks that the numbers the JavaScript displays equal what ``tinytrans`` computes in
Python for a grid of inputs, that nothing logs a console error or reaches the network, and
that no built page shows a traceback, a raw widget repr or a stderr block. Screenshots go to
``test-artifacts/``.

``TINYTRANS_BOOK_HTML`` points the test at another build (e.g. a mini book made while
developing); ``TINYTRANS_CHROMIUM`` at another Chromium binary.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator

import numpy as np
import pytest
from _book import ARTIFACTS, BUILD, Visit, require_build

from tinytrans import sizing
from tinytrans.model import ModelConfig
from tinytrans.widgets import data as D
from tinytrans.widgets import render

pytestmark = pytest.mark.browser

PAGE = "book/explorers.html"


@pytest.fixture
def visit(browser, site) -> Iterator[Visit]:
    if not (BUILD / PAGE).is_file():
        pytest.fail(f"{PAGE} is missing from the built book; is book/explorers in _toc.yml?")
    v = Visit(
        browser, f"{site}/{PAGE}", ready="document.querySelectorAll('[data-mounted]').length >= 3"
    )
    yield v
    v.check_clean()
    v.page.close()


def shoot(locator, name: str) -> None:
    """Screenshot of one explorable (the theme's sticky headers unpinned so none overlaps)."""
    ARTIFACTS.mkdir(exist_ok=True)
    locator.page.add_style_tag(
        content=".bd-header-article, .bd-header { position: static !important; }"
    )
    locator.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def embedded(root) -> dict:
    return json.loads(root.locator("script.tt-data").text_content())


# ----------------------------------------------------------------------------- control helpers


def set_range(root, testid: str, value: float) -> None:
    root.locator(f"[data-testid={testid}]").evaluate(
        "(el, v) => { el.value = v; el.dispatchEvent(new Event('input', {bubbles: true})); }",
        str(value),
    )


def set_number(root, testid: str, value: float) -> None:
    root.locator(f"[data-testid={testid}]").evaluate(
        "(el, v) => { el.value = v; el.dispatchEvent(new Event('change', {bubbles: true})); }",
        str(value),
    )


def select(root, testid: str, value: str | int) -> None:
    root.locator(f"[data-testid={testid}]").select_option(str(value))


def value_of(root, testid: str) -> float:
    return float(root.locator(f"[data-testid={testid}]").get_attribute("data-value"))


def text_of(root, testid: str) -> str:
    return root.locator(f"[data-testid={testid}]").text_content().strip()


# ----------------------------------------------------------------------------- static pages


def test_built_pages_have_no_tracebacks_widget_reprs_or_stderr():
    require_build()
    pages = sorted(BUILD.rglob("*.html"))
    assert pages
    problems = []
    for page in pages:
        text = page.read_text(encoding="utf-8", errors="replace")
        for bad in ("Traceback (most recent call last)", "VBox(children=", "interactive(children=",
                    "HBox(children=", "Output(outputs="):  # fmt: skip
            if bad in text:
                problems.append(f"{page.relative_to(BUILD)}: {bad}")
        if re.search(r'class="[^"]*\boutput (stderr|traceback)\b', text):
            problems.append(f"{page.relative_to(BUILD)}: stderr/traceback output block")
    assert problems == []


def test_explorers_page_mounts_every_explorable(visit):
    page = visit.page
    for kind in ("attention", "sampling", "sizing"):
        root = page.locator(f"[data-testid=tt-{kind}-explorer]")
        assert root.count() == 1 and root.get_attribute("data-mounted") == "1"
        assert root.locator("[data-testid=tt-error]").count() == 0
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "explorers-page.png"), full_page=True)


# ----------------------------------------------------------------------------- attention


def _expected_weight(entry: dict, data: dict, L: int, head: str, q: int, k: int) -> float:
    heads = range(data["n_heads"]) if head == "mean" else [int(head)]
    values = [entry["weights"][L][h][q * (q + 1) // 2 + k] for h in heads]
    return float(np.mean(values)) / data["weight_scale"]


def test_attention_explorable_displays_the_python_numbers(visit):
    root = visit.page.locator("[data-testid=tt-attention-explorer]")
    data = embedded(root)
    L_last, H_last = data["n_layers"] - 1, data["n_heads"] - 1
    for p, prompt in enumerate(data["prompts"]):
        select(root, "tt-att-prompt", p)
        T = len(prompt["tokens"])
        for layer, head in ((0, "0"), (L_last, str(H_last)), (L_last, "mean")):
            select(root, "tt-att-layer", layer)
            select(root, "tt-att-head", head)
            panels = root.locator("[data-testid=tt-panel]")
            assert panels.count() == len(data["labels"])
            for m in range(len(data["labels"])):
                panel = panels.nth(m)
                for q, k in ((T - 1, 0), (T - 1, T - 1), (T // 2, T // 3), (1, 1)):
                    panel.locator(f"g.tt-row[data-q='{q}'] rect[data-k='{k}']").hover()
                    readout = panel.locator("[data-testid=tt-readout]")
                    expected = _expected_weight(prompt["models"][m], data, layer, head, q, k)
                    assert float(readout.get_attribute("data-value")) == pytest.approx(
                        expected, abs=1e-9
                    )
                    assert readout.inner_text().endswith(render.fmt(expected, 3))
                strip = panel.locator("[data-testid=tt-strip] .tt-tok")
                assert strip.count() == T
    # per-head statistics: the grids show Python's numbers; a click selects the head
    stats = data["prompts"][-1]["models"][0]["stats"]
    cells = root.locator("[data-testid=tt-head-stats]").first.locator("td.tt-statcell")
    assert cells.count() == 4 * data["n_layers"] * data["n_heads"]
    for i in range(cells.count()):
        cell = cells.nth(i)
        key, L, H = (cell.get_attribute(a) for a in ("data-stat", "data-layer", "data-head"))
        assert cell.inner_text() == render.fmt(stats[key][int(L)][int(H)], 2)
    root.locator(
        f"td.tt-statcell[data-stat=induction][data-layer='{L_last}'][data-head='1']"
    ).first.click()
    assert root.locator("[data-testid=tt-att-head]").input_value() == "1"
    # the steps view: scores (unmasked), masked scores, weights
    select(root, "tt-att-view", "steps")
    panel = root.locator("[data-testid=tt-panel]").first
    assert panel.locator("svg.tt-heatmap").count() == 3
    assert panel.locator("svg.tt-heatmap").first.locator("polygon.tt-masked").count() == 0
    entry, T = data["prompts"][-1]["models"][0], len(data["prompts"][-1]["tokens"])
    panel.locator("svg.tt-heatmap").first.locator("g.tt-row[data-q='1'] rect[data-k='3']").hover()
    expected = entry["scores"][L_last][1][1 * T + 3] / data["score_scale"]
    assert value_of(panel, "tt-readout") == pytest.approx(expected, abs=1e-9)
    shoot(root, "explorer-attention-steps")
    select(root, "tt-att-head", "all")
    assert (
        root.locator("[data-testid=tt-panel]").first.locator("figure.tt-small").count()
        == data["n_heads"]
    )
    select(root, "tt-att-view", "weights")
    select(root, "tt-att-head", "mean")
    shoot(root, "explorer-attention")


# ----------------------------------------------------------------------------- sampling

SAMPLING_GRID = [
    # (prompt, step, method, temperature, top_k, top_p, min_p, n, seed)
    (0, 0, "sample", 1.0, 0, 1.0, 0.0, 200, 0),
    (0, 2, "sample", 0.7, 0, 0.9, 0.0, 100, 3),
    (0, 5, "sample", 1.5, 5, 1.0, 0.0, 500, 1),
    (-1, 1, "sample", 0.05, 0, 1.0, 0.0, 200, 2),  # near-greedy: log-sum-exp must hold
    (-1, 3, "sample", 1.2, 10, 0.6, 0.05, 1000, 7),
    (-1, 0, "sample", 0.0, 0, 1.0, 0.0, 20, 0),  # temperature 0 = greedy
    (0, 4, "sample", 0.85, 0, 1.0, 0.2, 200, 4),
    (0, 1, "greedy", 1.0, 0, 1.0, 0.0, 200, 0),
    (-1, 2, "beam", 1.0, 0, 1.0, 0.0, 0, 0),  # beams rank by the T = 1 distribution
]


def _apply_sampling(root, prompt, step, method, temperature, top_k, top_p, min_p, n, seed) -> None:
    select(root, "tt-s-prompt", prompt)
    set_range(root, "tt-s-step", step)
    root.locator(f"[data-testid=tt-s-method-{method}]").check()
    if method == "sample":
        set_range(root, "tt-s-temperature", temperature)
        set_number(root, "tt-s-topk", top_k)
        set_range(root, "tt-s-topp", top_p)
        set_range(root, "tt-s-minp", min_p)
    if method != "beam":
        select(root, "tt-s-n", n)
        set_number(root, "tt-s-seed", seed)


@pytest.mark.parametrize("case", SAMPLING_GRID, ids=lambda c: "-".join(map(str, c)))
def test_sampling_explorable_displays_the_python_numbers(visit, case):
    prompt, step, method, temperature, top_k, top_p, min_p, n, seed = case
    root = visit.page.locator("[data-testid=tt-sampling-explorer]")
    data = embedded(root)
    prompt = prompt % len(data["prompts"])
    _apply_sampling(root, prompt, step, method, temperature, top_k, top_p, min_p, n, seed)
    logits = np.array(data["prompts"][prompt]["steps"][step]["logits"], dtype=np.float32)
    config = D.sampling_config(method, temperature, top_k, top_p, min_p)
    n = 0 if method == "beam" else n
    view = D.sampling_view(
        logits, config, sample_n=n, seed=seed
    )  # Python, via generate.filter_stages

    assert text_of(root, "tt-entropy-base") == render.fmt(view.entropy_base, 3)
    assert text_of(root, "tt-entropy") == render.fmt(view.entropy_final, 3)
    assert text_of(root, "tt-effective") == render.fmt(view.effective_vocab, 2)
    assert text_of(root, "tt-kept") == f"{view.num_kept} / {data['vocab_size']}"
    rows = root.locator("[data-testid=tt-bars] tbody tr")
    assert [
        int(t) for t in rows.evaluate_all("rs => rs.map(r => r.dataset.token)")
    ] == view.top_tokens(12)
    for stage in ("base", "tempered", "final"):
        cells = root.locator(f"[data-testid=tt-bars] td[data-stage={stage}]")
        shown = cells.evaluate_all(
            "cs => cs.map(c => [Number(c.dataset.token), Number(c.dataset.value)])"
        )
        for token, value in shown:
            assert value == pytest.approx(getattr(view, stage)[token], abs=2e-6), (stage, token)
    dropped = rows.evaluate_all(
        "rs => rs.filter(r => r.classList.contains('tt-dropped')).map(r => Number(r.dataset.token))"
    )
    assert dropped == [t for t in view.top_tokens(12) if not view.kept[t]]
    histogram = root.locator("[data-testid=tt-hist] rect[data-count]")
    counts = histogram.evaluate_all(
        "rs => rs.map(r => [Number(r.dataset.token), Number(r.dataset.count)])"
    )
    if view.counts is None:
        assert counts == []
    else:
        assert counts and all(view.counts[t] == c for t, c in counts)
    if view.p_kept is not None and view.p_kept <= 100:
        assert text_of(root, "tt-cut") == f"{view.p_kept} kept"
    if case == SAMPLING_GRID[1]:
        shoot(root, "explorer-sampling")


def test_sampling_beam_trees_show_python_beam_search(visit):
    root = visit.page.locator("[data-testid=tt-sampling-explorer]")
    data = embedded(root)
    root.locator("[data-testid=tt-s-method-beam]").check()
    for step in (0, data["n_steps"] - 1):
        set_range(root, "tt-s-step", step)
        for width in data["beam_widths"]:
            select(root, "tt-s-beams", width)
            tree = data["prompts"][0]["steps"][step]["beams"][str(width)]
            shown = root.locator("[data-testid=tt-beam-logp]").all_inner_texts()
            assert shown == [f"{b['log_prob']:.4f}" for b in tree["best"]]
            nodes = root.locator("[data-testid=tt-beam] g[data-status]")
            assert nodes.count() == sum(len(s) for s in tree["steps"])
            kept = root.locator("[data-testid=tt-beam] g[data-status=kept]").count()
            assert kept == sum(c["status"] == "kept" for s in tree["steps"] for c in s)
    shoot(root, "explorer-sampling-beam")


# ----------------------------------------------------------------------------- sizing

SIZING_GRID = [
    # (preset, batch, precision, optimizer, checkpointing, tokens, device index, mfu)
    ("course", 8, "fp32", "adamw", False, 0, 0, 0.4),
    ("tiny-postnorm", 32, "bf16-mixed", "adamw", True, 5e8, 1, 0.3),
    ("gpt2-small", 4, "bf16-true", "sgd-momentum", False, 9e9, 2, 0.5),
    ("tinyllama-1.1b", 1, "fp16-mixed", "adamw", True, 3e12, 2, 0.45),
    ("llama2-7b", 2, "bf16-true", "sgd", False, 2e12, 1, 0.55),
]
SIZING_IDS = ["tt-mem-" + k for k, _ in render.MEMORY_ROWS] + [
    "tt-mem-total",
    "tt-mem-inference",
    "tt-kv-cache",
]


def _check_sizing(root, config: ModelConfig, options: dict) -> None:
    f = D.sizing_figures(config, **options)
    for row in f["breakdown"]:
        testid = "tt-param-" + render.slug(row["component"])
        assert value_of(root, testid) == row["count"], testid
        assert text_of(root, testid) == f"{row['count']:,}"
    for testid, key in zip(
        SIZING_IDS, [*(k for k, _ in render.MEMORY_ROWS), "total"], strict=False
    ):
        assert value_of(root, testid) == f["memory"][key], testid
        assert text_of(root, testid) == sizing.format_bytes(f["memory"][key])
    assert value_of(root, "tt-mem-inference") == f["weights_inference"]
    assert value_of(root, "tt-kv-cache") == f["kv_cache"]
    assert text_of(root, "tt-kv-cache") == sizing.format_bytes(f["kv_cache"])
    for testid, key in (("tt-flops-forward", "forward_flops_per_token"),
                        ("tt-flops-train-token", "training_flops_per_token")):  # fmt: skip
        assert value_of(root, testid) == f[key]
        assert text_of(root, testid) == sizing.format_flops(f[key])
    for testid, key in (("tt-tokens", "tokens"), ("tt-flops-train", "training_flops"),
                        ("tt-six-nd", "six_nd"), ("tt-time", "training_seconds"),
                        ("tt-loss", "predicted_loss")):  # fmt: skip
        assert math.isclose(value_of(root, testid), f[key], rel_tol=1e-12), testid
    assert text_of(root, "tt-flops-train") == sizing.format_flops(f["training_flops"])
    assert text_of(root, "tt-time") == sizing.format_duration(f["training_seconds"])


@pytest.mark.parametrize("case", SIZING_GRID, ids=lambda c: c[0])
def test_sizing_explorable_displays_the_python_numbers(visit, case):
    preset, batch, precision, optimizer, checkpointing, tokens, device_index, mfu = case
    root = visit.page.locator("[data-testid=tt-sizing-explorer]")
    device = list(sizing.PEAK_TFLOPS)[device_index]
    select(root, "tt-z-preset", preset)
    set_number(root, "tt-z-batch", batch)
    select(root, "tt-z-precision", precision)
    select(root, "tt-z-optimizer", optimizer)
    box = root.locator("[data-testid=tt-z-checkpointing]")
    if box.is_checked() != checkpointing:
        box.click()
    set_number(root, "tt-z-tokens", tokens)
    select(root, "tt-z-device", device)
    set_range(root, "tt-z-mfu", mfu)
    options = dict(batch_size=batch, precision=precision, optimizer=optimizer,
                   checkpointing=checkpointing, tokens=tokens or None, device=device, mfu=mfu)  # fmt: skip
    _check_sizing(root, ModelConfig.preset(preset), options)
    if preset == "course":
        shoot(root, "explorer-sizing")


def test_sizing_explorable_custom_and_invalid_configs(visit):
    root = visit.page.locator("[data-testid=tt-sizing-explorer]")
    select(root, "tt-z-preset", "course")
    edits = {"n_kv_heads": 2, "d_ff": 640, "vocab_size": 1000, "context_length": 512}
    for key, value in edits.items():
        set_number(root, f"tt-z-{key}", value)
    select(root, "tt-z-positional", "learned")
    select(root, "tt-z-norm", "layernorm")
    root.locator("[data-testid=tt-z-bias]").click()
    root.locator("[data-testid=tt-z-tie_embeddings]").click()
    assert root.locator("[data-testid=tt-z-preset]").input_value() == "custom"
    config = ModelConfig.preset("course").replace(
        **edits, positional="learned", norm="layernorm", bias=True, tie_embeddings=False
    )
    options = dict(batch_size=8, precision="fp32", optimizer="adamw", checkpointing=False,
                   tokens=None, device=next(iter(sizing.PEAK_TFLOPS)), mfu=0.4)  # fmt: skip
    _check_sizing(root, config, options)
    set_number(root, "tt-z-n_heads", 5)  # 192 is not divisible by 5
    error = root.locator("[data-testid=tt-error]")
    assert error.count() == 1 and "divisible" in error.inner_text()
    with pytest.raises(ValueError, match="divisible"):
        config.replace(n_heads=5)
    shoot(root, "explorer-sizing-invalid")
