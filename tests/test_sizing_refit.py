"""Chapter 5's claim about the two Chinchilla fits: Approach 3 drifts, the refit does not."""

from __future__ import annotations

import pytest

from tinytrans import sizing as S

BUDGETS = [10.0**k for k in range(18, 25)]


def test_approach_3_drifts_from_26_to_98_tokens_per_parameter():
    ratios = [S.loss_optimal(c).tokens_per_param for c in BUDGETS]
    assert ratios == sorted(ratios)
    assert round(ratios[0]) == 26 and round(ratios[-1]) == 98


def test_the_refit_stays_near_20_tokens_per_parameter():
    ratios = [S.loss_optimal(c, S.CHINCHILLA_REFIT).tokens_per_param for c in BUDGETS]
    assert all(18 <= round(r) <= 26 for r in ratios), ratios
    assert S.CHINCHILLA_REFIT.alpha < S.CHINCHILLA_REFIT.beta  # why it does not drift upwards


def test_the_refit_is_a_minimum_of_its_own_loss():
    c = 1e21
    best = S.loss_optimal(c, S.CHINCHILLA_REFIT)
    loss = S.chinchilla_loss(best.params, best.tokens, S.CHINCHILLA_REFIT)
    for factor in (0.8, 1.25):
        n = best.params * factor
        other = S.chinchilla_loss(n, c / (6 * n), S.CHINCHILLA_REFIT)
        assert other > loss
    assert best.params * best.tokens * 6 == pytest.approx(c)
