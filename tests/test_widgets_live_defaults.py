"""The live sampling explorer starts from the values a chapter passes (chapter 4 passes
``temperature=0.8, top_p=0.9``), as the static explorable in the book does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tinytrans import widgets as W
from tinytrans.generate import SamplingConfig, step_distributions
from tinytrans.model import ModelConfig, TinyTransformer
from tinytrans.tokenizers import CharTokenizer
from tinytrans.widgets import live
from tinytrans.widgets.static import SAMPLING_DEFAULTS

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok() -> CharTokenizer:
    return CharTokenizer("\n !',-.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


@pytest.fixture(scope="module")
def model(tok) -> TinyTransformer:
    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=tok.vocab_size, context_length=64, d_model=32, n_layers=2, n_heads=4, d_ff=64
    )
    return TinyTransformer(config).eval()


def test_live_explorer_starts_from_the_chapters_values(model, tok):
    explorer = W.sampling_explorer(
        model, tok, "To be", static=False, n_steps=3, temperature=0.8, top_p=0.9, top_k=5
    )
    assert isinstance(explorer, live.SamplingExplorer) and explorer.errors == []
    assert explorer.temperature.value == 0.8
    assert explorer.top_p.value == 0.9
    assert explorer.top_k.value == 5
    assert explorer.min_p.value == SAMPLING_DEFAULTS["min_p"]  # not passed: the default
    assert explorer.method.value == SAMPLING_DEFAULTS["method"]
    # what it shows is that setting's distribution, not the default one's
    expected = step_distributions(model, explorer.path().contexts[0], SamplingConfig(0.8, 5, 0.9))
    np.testing.assert_allclose(explorer.current.final, expected.final.probs.numpy(), atol=1e-7)


def test_live_explorer_widens_controls_for_values_outside_their_range(model, tok):
    explorer = W.sampling_explorer(
        model, tok, "To be", static=False, n_steps=2, temperature=2.5, n=300, beams=8
    )
    assert explorer.errors == []
    assert explorer.temperature.value == 2.5 and explorer.temperature.max >= 2.5
    assert explorer.sample_n.value == 300 and 300 in explorer.sample_n.options
    assert explorer.beams.value == 8


def test_live_explorer_rejects_unknown_settings(model, tok):
    with pytest.raises(
        ValueError, match=r"unknown sampling explorer setting\(s\) \['temprature'\]"
    ):
        W.sampling_explorer(model, tok, "To be", static=False, n_steps=2, temprature=0.5)
