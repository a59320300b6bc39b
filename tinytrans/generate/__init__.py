"""Running a trained model: sampling, beam search and the tricks that make decoding fast (chapter 4).

The package follows the chapter; everything drives :class:`tinytrans.model.TinyTransformer`
one token at a time and nothing changes the model itself.

* ``tinytrans.generate.prompts`` -- prompts in, checked ids out (section 4.1).
* ``tinytrans.generate.sampling`` -- :class:`SamplingConfig`, the logit filters, one
  sampling step and every distribution the sampling explorer shows (sections 4.2, 4.3, 4.5).
* ``tinytrans.generate.decode`` -- :func:`generate`, :func:`stream_generate`,
  :func:`generate_tokens` and :func:`generate_batch` (sections 4.1, 4.6, 4.7).
* ``tinytrans.generate.beam`` -- :func:`beam_search` (section 4.4).
* ``tinytrans.generate.speculative`` -- :func:`speculative_generate` (greedy, with a model
  or a :class:`PromptLookupDraft`) and :func:`speculative_sample` (section 4.8).
* ``tinytrans.generate.quantize`` -- :func:`quantize_int8`, :func:`fake_quantize` and
  :func:`quantize_weights` (section 4.9).
* ``tinytrans.generate.serving`` -- :class:`ContinuousBatcher` (section 4.7) and the
  latency and memory budget, time to first token (section 4.10).

``tinytrans.generate`` is this package and ``tinytrans.generate.generate`` the function
(no submodule is called ``generate``). Perplexity lives in :mod:`tinytrans.evaluate`.
"""

from __future__ import annotations

from tinytrans.generate.beam import Beam, BeamCandidate, BeamSearchTree, beam_search
from tinytrans.generate.decode import generate, generate_batch, generate_tokens, stream_generate
from tinytrans.generate.prompts import encode_prompt
from tinytrans.generate.quantize import (
    WEIGHT_SCHEMES,
    fake_quantize,
    quantize_groups,
    quantize_int8,
    quantize_weights,
    state_dict_bytes,
    weight_storage_bytes,
)
from tinytrans.generate.sampling import (
    GREEDY,
    DistributionStage,
    SamplingConfig,
    StepDistributions,
    apply_frequency_presence_penalty,
    apply_repetition_penalty,
    apply_temperature,
    filter_logits,
    filter_stages,
    make_generator,
    min_p_filter,
    no_repeat_ngram_filter,
    resolve_sampling,
    sample_next,
    step_distributions,
    top_k_filter,
    top_p_filter,
)
from tinytrans.generate.serving import (
    LATENCY_BUDGET_MS,
    RSS_BUDGET_MB,
    ContinuousBatcher,
    RequestTiming,
    check_budget,
    latency_profile,
    peak_rss_mb,
    request_timings,
    ttft_summary,
)
from tinytrans.generate.speculative import (
    PromptLookupDraft,
    SpeculativeResult,
    prompt_lookup_propose,
    residual_distribution,
    speculative_accept,
    speculative_generate,
    speculative_output_distribution,
    speculative_sample,
)

__all__ = [
    "GREEDY",
    "LATENCY_BUDGET_MS",
    "RSS_BUDGET_MB",
    "WEIGHT_SCHEMES",
    "Beam",
    "BeamCandidate",
    "BeamSearchTree",
    "ContinuousBatcher",
    "DistributionStage",
    "PromptLookupDraft",
    "RequestTiming",
    "SamplingConfig",
    "SpeculativeResult",
    "StepDistributions",
    "apply_frequency_presence_penalty",
    "apply_repetition_penalty",
    "apply_temperature",
    "beam_search",
    "check_budget",
    "encode_prompt",
    "fake_quantize",
    "filter_logits",
    "filter_stages",
    "generate",
    "generate_batch",
    "generate_tokens",
    "latency_profile",
    "make_generator",
    "min_p_filter",
    "no_repeat_ngram_filter",
    "peak_rss_mb",
    "prompt_lookup_propose",
    "quantize_groups",
    "quantize_int8",
    "quantize_weights",
    "request_timings",
    "residual_distribution",
    "resolve_sampling",
    "sample_next",
    "speculative_accept",
    "speculative_generate",
    "speculative_output_distribution",
    "speculative_sample",
    "state_dict_bytes",
    "step_distributions",
    "stream_generate",
    "top_k_filter",
    "top_p_filter",
    "ttft_summary",
    "weight_storage_bytes",
]
