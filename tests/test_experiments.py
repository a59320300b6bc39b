"""Paired-seed helpers (tinytrans.train.experiments) and bits per character (tinytrans.evaluate)."""

from __future__ import annotations

import math
import random
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinytrans.evaluate import bits_per_character
from tinytrans.train import PairedDifference, paired_difference, run_paired

values = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False)


def test_paired_difference_is_arm_minus_baseline_per_seed():
    d = paired_difference([2.0, 3.0, 4.0], [2.5, 3.1, 4.6])
    assert d.differences == pytest.approx((0.5, 0.1, 0.6))
    assert d.n == 3
    assert d.mean == pytest.approx(0.4)
    # sample standard deviation of (0.5, 0.1, 0.6) is sqrt(0.07), over sqrt(3)
    assert d.stderr == pytest.approx(math.sqrt(0.07 / 3))
    assert d.z == pytest.approx(0.4 / math.sqrt(0.07 / 3))
    assert str(d) == f"+0.400 ± {math.sqrt(0.07 / 3):.3f}"


@given(st.lists(st.tuples(values, values), min_size=2, max_size=20))
def test_paired_difference_matches_statistics(pairs):
    baseline, arm = zip(*pairs, strict=True)
    d = paired_difference(baseline, arm)
    diffs = [a - b for b, a in pairs]
    assert d.mean == pytest.approx(statistics.fmean(diffs), abs=1e-9)
    assert d.stderr == pytest.approx(statistics.stdev(diffs) / math.sqrt(len(diffs)), abs=1e-9)


@given(st.lists(values, min_size=2, max_size=10), values)
def test_a_constant_shift_has_no_standard_error(baseline, shift):
    d = paired_difference(baseline, [b + shift for b in baseline])
    assert d.mean == pytest.approx(shift, abs=1e-9)
    assert d.stderr == pytest.approx(0.0, abs=1e-9)


def test_pairing_removes_what_the_seeds_share():
    rng = random.Random(0)
    luck = [rng.gauss(0, 1.0) for _ in range(8)]  # large, shared by both arms of a seed
    baseline = [2.0 + u for u in luck]
    arm = [2.1 + u + rng.gauss(0, 0.01) for u in luck]
    d = paired_difference(baseline, arm)
    assert d.mean == pytest.approx(0.1, abs=0.02)
    assert d.z > 10  # unpaired, the spread of `luck` would swamp the 0.1


def test_z_of_an_exact_difference():
    assert paired_difference([1.0, 2.0], [1.5, 2.5]).z == math.inf
    assert paired_difference([1.0, 2.0], [1.0, 2.0]).z == 0.0
    assert isinstance(paired_difference([1.0, 2.0], [0.5, 1.5]), PairedDifference)


@pytest.mark.parametrize(
    ("baseline", "arm", "message"),
    [
        ([1.0, 2.0], [1.0], "one value per seed"),
        ([1.0], [1.0], "at least 2 seeds"),
        ([1.0, float("nan")], [1.0, 2.0], "finite"),
    ],
)
def test_paired_difference_rejects_bad_input(baseline, arm, message):
    with pytest.raises(ValueError, match=message):
        paired_difference(baseline, arm)


def test_run_paired_seeds_every_arm_alike():
    import torch

    def draw(seed):
        return (seed, torch.rand(3).tolist())

    results = run_paired({"a": draw, "b": draw}, seeds=[0, 5, 7])
    assert [seed for seed, _ in results["a"]] == [0, 5, 7]
    assert results["a"] == results["b"]  # the same seed, the same random state
    assert results["a"][0][1] != results["a"][1][1]


def test_run_paired_builds_equal_models_per_seed():
    from tinytrans.model import ModelConfig, TinyTransformer

    config = ModelConfig.preset("course", vocab_size=16, context_length=8, d_model=16,
                                n_layers=1, n_heads=2, d_ff=32)  # fmt: skip

    def first_weight(seed):
        return TinyTransformer(config).tok_emb.weight.detach().clone()

    results = run_paired({"a": first_weight, "b": first_weight}, seeds=[1, 2])
    assert all((a == b).all() for a, b in zip(results["a"], results["b"], strict=True))
    assert not (results["a"][0] == results["a"][1]).all()


def test_run_paired_rejects_bad_seeds():
    with pytest.raises(ValueError, match="distinct"):
        run_paired({"a": lambda seed: seed}, seeds=[1, 1])
    with pytest.raises(ValueError, match="at least one arm"):
        run_paired({}, seeds=[1])


def test_bits_per_character():
    # one token per character at ln 2 nats per token is one bit per character
    assert bits_per_character(math.log(2), 100, 100) == pytest.approx(1.0)
    # a tokenizer with 4 characters per token at the same bits per character has 4x the loss
    assert bits_per_character(4 * math.log(2), 25, 100) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="n_characters"):
        bits_per_character(1.0, 10, 0)
    with pytest.raises(ValueError, match="finite"):
        bits_per_character(float("inf"), 10, 10)
