"""The errata's checks follow one tolerance rule, and the figures issue 15 found missing are in."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tinytrans import errata

CHECKS = errata.seed_checks()


#: Units a seed prints in that are not powers of ten of the base unit (KiB, MiB, GiB; hours).
_SCALES = (1, 1024, 1024**2, 1024**3, 3600)


def _last_digit_unit(value: float) -> float | None:
    """One unit of the last non-zero digit of a figure as the seed printed it, in base units
    (None if it is a computed ratio with many digits, which no seed printed)."""
    if value == 0:
        return None
    best = None
    for scale in _SCALES:
        digits = Decimal(repr(float(value) / scale)).normalize()
        _, mantissa, exponent = digits.as_tuple()
        if len(mantissa) <= 6 and (best is None or len(mantissa) < best[0]):
            best = (len(mantissa), float(Decimal(1).scaleb(exponent)) * scale)
    return None if best is None else best[1]


def _is_estimate(check: errata.SeedCheck) -> bool:
    high = max(check.claimed) if isinstance(check.claimed, tuple) else check.claimed
    return check.tolerance == high / 2


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: f"{c.seed}:{c.quantity[:40]}")
def test_no_check_is_looser_than_the_claims_last_digit(check):
    if _is_estimate(check):
        return  # rough estimates of memory: +-50% by design
    for value in check.claimed if isinstance(check.claimed, tuple) else (check.claimed,):
        unit = _last_digit_unit(value)
        if unit is not None:
            assert check.tolerance <= unit * (1 + 1e-9), (check.claim, check.tolerance, unit)


def _find(seed: str, text: str) -> errata.SeedCheck:
    hits = [c for c in CHECKS if c.seed == seed and text in c.quantity]
    assert len(hits) == 1, [c.quantity for c in hits]
    return hits[0]


@pytest.mark.parametrize(
    ("seed", "quantity", "correct", "ok"),
    [
        ("001", "training cost when the context doubles", 1.13, False),
        ("001", "attention FLOPs per token when d_model doubles", 3.33, False),
        ("001", "FFN FLOPs per sequence when the sequence doubles", 2.0, False),
        ("003", "LLaMA 7B tokens per parameter", 148.3, False),
        ("004", "memory of the target device", 536_870_912, False),
        ("004", "batches per second in its tokens-per-second line", 318.68, False),
        ("004", "tokens/s at 3.1 batches/s", 12_697.6, False),
        ("004", "learning rate at batch 128 / at batch 32", 2.0, False),
        ("004", "batches per second at 19,121 per 60 s", 318.68, True),
    ],
)
def test_issue_15_figures(seed, quantity, correct, ok):
    check = _find(seed, quantity)
    assert check.correct == pytest.approx(correct, rel=2e-3)
    assert check.ok is ok
    assert check.location in errata.SECTION_ORDER[seed]


def test_every_check_names_a_known_section():
    for check in CHECKS:
        assert check.location in errata.SECTION_ORDER[check.seed], check.location
