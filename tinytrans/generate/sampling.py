"""Turning one step's logits into a token (sections 4.2, 4.3 and 4.5).

Pure logit filters (:func:`apply_temperature`, :func:`top_k_filter`, :func:`top_p_filter`,
:func:`min_p_filter`, :func:`apply_repetition_penalty`) composed in one fixed order by
:func:`filter_logits`; :func:`sample_next` draws from the result. :func:`filter_stages` and
:func:`step_distributions` expose every intermediate distribution for the sampling explorer.

Decisions (documented once, used everywhere):

* ``temperature == 0`` means greedy decoding (argmax, no random numbers drawn);
  ``temperature < 0`` is a ``ValueError``. Filters after a zero temperature are no-ops.
* Filter order: the history filters (repetition penalty, frequency and presence penalties,
  no-repeat n-grams) -> temperature -> top-k -> top-p -> min-p. Each filter
  sets removed logits to ``-inf`` and always keeps at least the most likely token, so a
  step never needs a check (and a device-to-host sync) that something is left to sample.
* Sampling is given one way, a :class:`SamplingConfig`. The decoding functions also accept
  its fields as keyword shortcuts (``temperature=0``), turned into a config by
  :func:`resolve_sampling`; giving both is an error.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from tinytrans.generate.prompts import encode_prompt
from tinytrans.model import TinyTransformer, eval_mode
from tinytrans.tokenizers import Tokenizer

__all__ = [
    "GREEDY",
    "DistributionStage",
    "SamplingConfig",
    "StepDistributions",
    "apply_frequency_presence_penalty",
    "apply_repetition_penalty",
    "apply_temperature",
    "filter_logits",
    "filter_stages",
    "make_generator",
    "min_p_filter",
    "no_repeat_ngram_filter",
    "resolve_sampling",
    "sample_next",
    "step_distributions",
    "top_k_filter",
    "top_p_filter",
]

#: Previous token ids for the repetition penalty: one list, one list per row, or a tensor.
PreviousIds = torch.Tensor | Sequence[int] | Sequence[Sequence[int]]


@dataclass(frozen=True)
class SamplingConfig:
    """How to turn one step's logits into a token (section 4.3).

    ``temperature == 0`` is greedy (argmax); ``top_k``/``top_p``/``min_p`` are off when
    ``None``; ``repetition_penalty == 1``, ``frequency_penalty == presence_penalty == 0`` and
    ``no_repeat_ngram_size == 0`` are off. Validated on construction.
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    no_repeat_ngram_size: int = 0

    def __post_init__(self) -> None:
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or math.isnan(t) or t < 0:
            raise ValueError(f"temperature must be a number >= 0 (0 means greedy), got {t!r}.")
        if self.top_k is not None and (
            isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1
        ):
            raise ValueError(f"top_k must be None or an integer >= 1, got {self.top_k!r}.")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be None or in (0, 1], got {self.top_p!r}.")
        if self.min_p is not None and not 0.0 <= self.min_p < 1.0:
            raise ValueError(f"min_p must be None or in [0, 1), got {self.min_p!r}.")
        if not self.repetition_penalty > 0:
            raise ValueError(
                f"repetition_penalty must be > 0 (1 = off), got {self.repetition_penalty!r}."
            )
        for name in ("frequency_penalty", "presence_penalty"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number (0 = off), got {value!r}.")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite (0 = off), got {value!r}.")
        n = self.no_repeat_ngram_size
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"no_repeat_ngram_size must be an integer >= 0 (0 = off), got {n!r}.")

    @property
    def uses_history(self) -> bool:
        """True when a filter looks at the tokens generated so far (section 4.3)."""
        return (
            self.repetition_penalty != 1.0
            or self.frequency_penalty != 0
            or self.presence_penalty != 0
            or self.no_repeat_ngram_size > 0
        )

    @property
    def greedy(self) -> bool:
        """True when decoding is deterministic argmax (``temperature == 0``, section 4.2)."""
        return self.temperature == 0


#: Greedy decoding (section 4.2): always the most likely token.
GREEDY = SamplingConfig(temperature=0.0)

#: The keyword shortcuts the decoding functions accept: the fields of SamplingConfig.
_SHORTCUTS = tuple(f.name for f in dataclasses.fields(SamplingConfig))


def resolve_sampling(sampling: SamplingConfig | None = None, **shortcuts: Any) -> SamplingConfig:
    """One :class:`SamplingConfig` from ``sampling`` or from its fields as keywords (section 4.3).

    ``resolve_sampling(temperature=0)`` is ``SamplingConfig(temperature=0)``; with neither,
    the default config (plain sampling at T = 1). Giving both, or a keyword that is not a
    field, is an error that names the fix.
    """
    unknown = sorted(set(shortcuts) - set(_SHORTCUTS))
    if unknown:
        raise TypeError(
            f"unknown sampling option {unknown[0]!r}; the options are {', '.join(_SHORTCUTS)} "
            "(or pass sampling=SamplingConfig(...))."
        )
    if sampling is None:
        return SamplingConfig(**shortcuts)
    if shortcuts:
        raise ValueError(
            f"pass either sampling=SamplingConfig(...) or individual parameters "
            f"({', '.join(sorted(shortcuts))}), not both."
        )
    if not isinstance(sampling, SamplingConfig):
        raise TypeError(f"sampling must be a SamplingConfig, got {type(sampling).__name__}.")
    return sampling


def make_generator(
    seed: int | None, generator: torch.Generator | None, device: torch.device
) -> torch.Generator | None:
    """A generator seeded with ``seed``, the given ``generator``, or None for the global RNG
    (section 4.3: a seed makes sampling reproducible)."""
    if seed is not None and generator is not None:
        raise ValueError("pass either seed or generator, not both.")
    if seed is None:
        return generator
    return torch.Generator(device=device).manual_seed(int(seed))


# --------------------------------------------------------------------------------------------
# The logit filters
# --------------------------------------------------------------------------------------------


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide logits by ``temperature``; ``0`` keeps only the argmax (the T -> 0 limit, section 4.3)."""
    if not temperature >= 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be >= 0 and finite, got {temperature}.")
    if temperature == 0:
        keep = F.one_hot(logits.argmax(-1), logits.shape[-1]).bool()  # (..., V)
        return logits.masked_fill(~keep, float("-inf"))
    scaled = logits / temperature
    if temperature >= 1:
        return scaled  # dividing by T >= 1 cannot overflow
    # A tiny temperature can overflow a finite logit to inf. Such rows are shifted by their
    # max first (softmax does not change), so the top logit stays 0 and the rest go to -inf
    # instead of inf - inf = nan. Decided per row on the device, without a host sync.
    overflow = (torch.isinf(scaled) & torch.isfinite(logits)).any(-1, keepdim=True)
    shifted = (logits - logits.amax(-1, keepdim=True)) / temperature
    return torch.where(overflow, shifted, scaled)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest logits of the last dimension (exactly k, ties by index; section 4.3)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got {k!r}.")
    if k >= logits.shape[-1]:
        return logits
    index = logits.sort(dim=-1, descending=True, stable=True).indices[..., :k]  # (..., k)
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, index, True)
    return logits.masked_fill(~keep, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: the smallest set of most likely tokens whose mass reaches ``p`` (section 4.3).

    A token is dropped when the tokens ranked above it already hold ``>= p`` of the
    probability, so the most likely token always survives.
    """
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {p!r}.")
    if p == 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True, stable=True)  # (..., V)
    probs = sorted_logits.float().softmax(-1)
    mass_before = probs.cumsum(-1) - probs  # probability of the tokens ranked above
    drop_sorted = mass_before >= p
    drop = torch.zeros_like(drop_sorted).scatter_(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Drop tokens whose probability is below ``min_p`` times the top token's (section 4.3)."""
    if not 0.0 <= min_p < 1.0:
        raise ValueError(f"min_p must be in [0, 1), got {min_p!r}.")
    if min_p == 0:
        return logits
    probs = logits.float().softmax(-1)
    threshold = min_p * probs.max(-1, keepdim=True).values
    return logits.masked_fill(probs < threshold, float("-inf"))


def _rows(logits: torch.Tensor, previous_ids: PreviousIds) -> list[list[int]]:
    """``previous_ids`` as one id list per row of ``logits`` (flattened to (rows, V))."""
    rows = logits.reshape(-1, logits.shape[-1]).shape[0]
    if isinstance(previous_ids, torch.Tensor):
        prev = previous_ids.reshape(rows, -1) if previous_ids.numel() else None
        per_row = [prev[r].tolist() if prev is not None else [] for r in range(rows)]
    elif rows > 1 or (len(previous_ids) and not isinstance(previous_ids[0], int)):
        per_row = [list(row) for row in previous_ids]  # type: ignore[arg-type]  # rows of ids
    else:
        per_row = [list(previous_ids)]  # one flat id list
    if len(per_row) != rows:
        raise ValueError(f"previous_ids has {len(per_row)} rows but logits have {rows}.")
    return per_row


Filter = Callable[[torch.Tensor], torch.Tensor]


def _seen_mask(logits: torch.Tensor, previous_ids: PreviousIds) -> torch.Tensor:
    """Boolean mask shaped like ``logits``: True for tokens already in ``previous_ids``."""
    seen = torch.zeros_like(logits, dtype=torch.bool)
    per_row = _rows(logits, previous_ids)
    flat = seen.view(len(per_row), -1)
    for r, ids in enumerate(per_row):
        if ids:
            flat[r, torch.as_tensor(ids, dtype=torch.long, device=logits.device)] = True
    return seen


def apply_repetition_penalty(
    logits: torch.Tensor, previous_ids: PreviousIds, penalty: float
) -> torch.Tensor:
    """CTRL's penalty (Keskar et al. 2019): make already-seen tokens less likely (section 4.3).

    A seen token's positive logit is divided by ``penalty`` and a negative one multiplied
    by it, so ``penalty > 1`` always lowers its probability. ``previous_ids`` is one id list
    for (V,) or (1, V) logits, or one list per row for (B, V).
    """
    if not penalty > 0:
        raise ValueError(f"repetition_penalty must be > 0, got {penalty!r}.")
    if penalty == 1.0:
        return logits
    seen = _seen_mask(logits, previous_ids)
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def apply_frequency_presence_penalty(
    logits: torch.Tensor, previous_ids: PreviousIds, frequency: float, presence: float
) -> torch.Tensor:
    """OpenAI-style penalties (section 4.3): subtract ``frequency`` times how often a token
    already occurred, plus ``presence`` once if it occurred at all. Unlike the repetition
    penalty they act additively, so a token's logit falls with every repeat."""
    if frequency == 0 and presence == 0:
        return logits
    per_row = _rows(logits, previous_ids)
    vocab = logits.shape[-1]
    counts = torch.zeros(len(per_row), vocab, dtype=logits.dtype, device=logits.device)
    for r, ids in enumerate(per_row):
        if ids:
            index = torch.as_tensor(ids, dtype=torch.long, device=logits.device)
            counts[r].index_add_(
                0, index, torch.ones(len(ids), dtype=logits.dtype, device=logits.device)
            )
    counts = counts.view(logits.shape)
    return logits - frequency * counts - presence * (counts > 0).to(logits.dtype)


def no_repeat_ngram_filter(logits: torch.Tensor, previous_ids: PreviousIds, n: int) -> torch.Tensor:
    """Forbid every token that would complete an ``n``-gram already in ``previous_ids``
    (section 4.3; Hugging Face's ``no_repeat_ngram_size``). The most likely allowed token
    always survives: when every token is banned, the row is left as it was."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"no_repeat_ngram_size must be an integer >= 0, got {n!r}.")
    if n == 0:
        return logits
    per_row = _rows(logits, previous_ids)
    banned = torch.zeros(len(per_row), logits.shape[-1], dtype=torch.bool, device=logits.device)
    for r, ids in enumerate(per_row):
        if len(ids) < n:
            continue
        prefix = tuple(ids[len(ids) - n + 1 :])  # the n - 1 newest tokens
        completions = [
            ids[i + n - 1] for i in range(len(ids) - n + 1) if tuple(ids[i : i + n - 1]) == prefix
        ]
        if completions:
            banned[r, torch.as_tensor(completions, dtype=torch.long, device=logits.device)] = True
    banned = banned.view(logits.shape)
    everything = banned.all(-1, keepdim=True)
    return logits.masked_fill(banned & ~everything, float("-inf"))


def _history_steps(
    config: SamplingConfig, previous_ids: PreviousIds | None
) -> list[tuple[str, Filter]]:
    """The enabled filters that read the tokens so far, in their fixed order."""
    if previous_ids is None:
        return []
    prev, steps = previous_ids, []
    if (penalty := config.repetition_penalty) != 1.0:
        steps.append(("repetition penalty", lambda x: apply_repetition_penalty(x, prev, penalty)))
    if config.frequency_penalty != 0 or config.presence_penalty != 0:
        f, p = config.frequency_penalty, config.presence_penalty
        steps.append(
            (
                "frequency/presence penalty",
                lambda x: apply_frequency_presence_penalty(x, prev, f, p),
            )
        )
    if (n := config.no_repeat_ngram_size) > 0:
        steps.append(("no-repeat n-gram", lambda x: no_repeat_ngram_filter(x, prev, n)))
    return steps


def _pipeline(
    config: SamplingConfig, previous_ids: PreviousIds | None = None
) -> list[tuple[str, Filter]]:
    """The enabled filters of ``config`` in their fixed order, as (name, logits -> logits)."""
    steps = _history_steps(config, previous_ids)
    steps.append(("temperature", lambda x: apply_temperature(x, config.temperature)))
    if config.greedy:
        return steps  # only the argmax is left; nothing else can change the choice
    if (k := config.top_k) is not None:
        steps.append(("top-k", lambda x: top_k_filter(x, k)))
    if (p := config.top_p) is not None:
        steps.append(("top-p", lambda x: top_p_filter(x, p)))
    if (m := config.min_p) is not None:
        steps.append(("min-p", lambda x: min_p_filter(x, m)))
    return steps


def filter_logits(
    logits: torch.Tensor, config: SamplingConfig, previous_ids: PreviousIds | None = None
) -> torch.Tensor:
    """Apply every enabled filter of ``config`` in order; removed tokens become ``-inf`` (section 4.3)."""
    x = logits.float()
    for _, step in _pipeline(config, previous_ids):
        x = step(x)
    return x


def sample_next(
    logits: torch.Tensor,
    config: SamplingConfig,
    generator: torch.Generator | None = None,
    previous_ids: PreviousIds | None = None,
) -> torch.Tensor:
    """Next token ids (B,) from (B, V) logits: argmax when greedy, else a seeded draw (section 4.3).

    Stays on the device: every filter keeps the most likely token, so there is always
    something to sample and no per-token check (a host sync) is needed.
    """
    if config.greedy:  # same result as filtering, minus a few small tensor ops per token
        for _, step in _history_steps(config, previous_ids):
            logits = step(logits)
        return logits.argmax(-1)
    probs = filter_logits(logits, config, previous_ids).softmax(-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


# --------------------------------------------------------------------------------------------
# Every distribution of one step, for the sampling explorer
# --------------------------------------------------------------------------------------------


@dataclass
class DistributionStage:
    """One stage of the sampling pipeline: logits, renormalised probabilities, kept mask (section 4.5)."""

    name: str
    logits: torch.Tensor  # (V,)
    probs: torch.Tensor  # (V,) sums to 1 over the kept tokens
    kept: torch.Tensor  # (V,) bool

    @property
    def num_kept(self) -> int:
        """How many tokens this stage leaves (section 4.5)."""
        return int(self.kept.sum())


@dataclass
class StepDistributions:
    """Every distribution of one sampling step, in pipeline order (first = model at T=1; section 4.5)."""

    stages: dict[str, DistributionStage]
    context: list[int] = field(default_factory=list)

    @property
    def final(self) -> DistributionStage:
        """The distribution the token is drawn from (section 4.5)."""
        return list(self.stages.values())[-1]

    @property
    def names(self) -> list[str]:
        """The stage names, in pipeline order (section 4.5)."""
        return list(self.stages)

    def __getitem__(self, name: str) -> DistributionStage:
        return self.stages[name]


def _stage(name: str, logits: torch.Tensor) -> DistributionStage:
    kept = torch.isfinite(logits)
    return DistributionStage(name, logits, logits.softmax(-1), kept)


def filter_stages(
    logits: torch.Tensor,
    config: SamplingConfig | None = None,
    previous_ids: PreviousIds | None = None,
) -> StepDistributions:
    """The distribution after each filter of ``config`` for one (V,) logit vector (section 4.5).

    Stage names: ``"model"`` (T = 1), then any of ``"repetition penalty"``, ``"temperature"``,
    ``"top-k"``, ``"top-p"``, ``"min-p"`` that are enabled. No model needed: the widget can
    feed hand-made logits.
    """
    config = config or SamplingConfig()
    x = logits.detach().float().reshape(-1)  # (V,)
    stages = {"model": _stage("model", x)}
    for name, step in _pipeline(config, previous_ids):
        x = step(x)
        stages[name] = _stage(name, x)
    return StepDistributions(stages)


def step_distributions(
    model: TinyTransformer,
    ids: str | Sequence[int] | torch.Tensor,
    config: SamplingConfig | None = None,
    *,
    tokenizer: Tokenizer | None = None,
    previous_ids: Sequence[int] | None = None,
) -> StepDistributions:
    """Run ``model`` on ``ids`` and return :func:`filter_stages` of its next-token logits (section 4.5).

    ``ids`` may be text when a ``tokenizer`` is given. The repetition penalty (if enabled)
    uses ``previous_ids``, by default the context itself.
    """
    context = encode_prompt(model, tokenizer, ids)
    window = context[-model.config.context_length :]
    with eval_mode(model), torch.inference_mode():
        logits, _ = model(torch.tensor([window], device=model.device))
    prev = context if previous_ids is None else list(previous_ids)
    result = filter_stages(logits[0, -1], config, prev)
    result.context = context
    return result
