"""One precision vocabulary for training and sizing (tinytrans.precision)."""

from __future__ import annotations

import pytest

from tinytrans.precision import (
    PRECISIONS,
    TRAINING_PRECISIONS,
    canonical_precision,
    get_precision,
)


def test_names_and_legacy_aliases():
    assert list(PRECISIONS) == ["fp32", "bf16-mixed", "fp16-mixed", "bf16-true"]
    assert TRAINING_PRECISIONS == ("auto", "fp32", "bf16-mixed", "fp16-mixed")
    assert canonical_precision("bf16") == "bf16-mixed"
    assert canonical_precision("fp16") == "fp16-mixed"
    assert canonical_precision("mixed") == "bf16-mixed"
    assert canonical_precision("auto") == "auto"


def test_recipes():
    assert get_precision("fp32").autocast is None
    assert get_precision("bf16-mixed").autocast == "bf16"
    assert get_precision("fp16-mixed").loss_scaling
    true = get_precision("bf16-true")
    assert (true.weights, true.autocast, true.trainable) == ("bf16", None, False)


def test_unknown_and_auto_are_explained():
    with pytest.raises(ValueError, match=r"precision must be one of .*'bf16-mixed'.*got 'int8'"):
        canonical_precision("int8")
    with pytest.raises(ValueError, match="depends on the device"):
        get_precision("auto")
