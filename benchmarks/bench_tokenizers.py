"""Tokenizer benchmark: BPE training speed, encode throughput, compression vs SentencePiece.

Run from the repository root: ``python benchmarks/bench_tokenizers.py``. Writes
``benchmarks/results/tokenizers.json``.

* BPE (from scratch) trained on the first 1 MB of the Shakespeare corpus to a 4,096-token
  vocabulary: median of 3 runs, against the 20 s target.
* Encode throughput of that tokenizer on held-out text (the corpus's last 500,000
  characters), with an empty cache and again with the cache filled.
* Compression (tokens per character) on the same held-out text of BPE from scratch,
  SentencePiece BPE and SentencePiece unigram, all trained on the same 1 MB at the same
  vocabulary size; the goal is BPE within 5 % of SentencePiece BPE.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median, time_call, write_result

from tinytrans.data import load_corpus
from tinytrans.tokenizers import BPETokenizer, SentencePieceTokenizer

TRAIN_BYTES = 1_000_000
HELD_OUT_CHARS = 500_000
VOCAB_SIZE = 4096
TARGET_SECONDS = 20.0
RUNS = 3


def bpe_training(train_text: str) -> tuple[BPETokenizer, dict[str, Any]]:
    """Median wall time of training BPE on ``train_text`` to ``VOCAB_SIZE``."""
    trained: list[BPETokenizer] = []
    times = time_call(
        lambda: trained.append(BPETokenizer.train(train_text, VOCAB_SIZE)), repeats=RUNS, warmup=0
    )
    tok = trained[-1]
    assert all(t.merges == tok.merges for t in trained), "BPE training is not deterministic"
    seconds = median(times)
    return tok, {
        "train_bytes": len(train_text.encode()),
        "vocab_size": VOCAB_SIZE,
        "runs_seconds": times,
        "median_seconds": seconds,
        "target_seconds": TARGET_SECONDS,
        "target_met": seconds <= TARGET_SECONDS,
        "first_merges": tok.merge_pieces(10),
    }


def encode_throughput(tok: BPETokenizer, text: str) -> dict[str, Any]:
    """MB/s encoding ``text`` with an empty cache (first pass) and a filled one."""
    n_bytes = len(text.encode())
    tok._cache.clear()
    start = time.perf_counter()
    ids = tok.encode(text)
    cold = time.perf_counter() - start
    warm = median(time_call(lambda: tok.encode(text), repeats=3, warmup=0))
    assert tok.decode(ids) == text, "BPE round trip failed on the held-out text"
    return {
        "held_out_bytes": n_bytes,
        "cold_cache_mb_per_s": n_bytes / cold / 1e6,
        "warm_cache_mb_per_s": n_bytes / warm / 1e6,
        "round_trip": True,
    }


def compression(tok: BPETokenizer, train_text: str, held_out: str) -> dict[str, Any]:
    """Tokens per character on ``held_out`` for BPE and both SentencePiece models."""
    rows: dict[str, Any] = {"bpe": {"tokens_per_char": len(tok.encode(held_out)) / len(held_out)}}
    for model_type in ("bpe", "unigram"):
        start = time.perf_counter()
        sp = SentencePieceTokenizer.train(train_text, VOCAB_SIZE, model_type=model_type)
        seconds = time.perf_counter() - start
        ids = sp.encode(held_out)
        rows[f"sp_{model_type}"] = {
            "tokens_per_char": len(ids) / len(held_out),
            "train_seconds": seconds,
            "lossless_on_held_out": sp.decode(ids) == held_out,
        }
    ours = rows["bpe"]["tokens_per_char"]
    for name in ("sp_bpe", "sp_unigram"):
        rows[f"ratio_bpe_to_{name}"] = ours / rows[name]["tokens_per_char"]
    rows["within_5_percent_of_sp_bpe"] = abs(rows["ratio_bpe_to_sp_bpe"] - 1) <= 0.05
    rows["within_5_percent_of_sp_unigram"] = abs(rows["ratio_bpe_to_sp_unigram"] - 1) <= 0.05
    return rows


def main() -> dict[str, Any]:
    corpus = load_corpus("shakespeare")
    raw = corpus.text.encode()
    train_text = raw[:TRAIN_BYTES].decode("utf-8", "ignore")
    held_out = corpus.text[-HELD_OUT_CHARS:]
    tok, training = bpe_training(train_text)
    payload = {
        "corpus": {"name": corpus.info.name, "sha256": corpus.info.sha256},
        "bpe_training": training,
        "bpe_encode": encode_throughput(tok, held_out),
        "compression": compression(tok, train_text, held_out),
    }
    path = write_result("tokenizers", payload)
    print(f"BPE train: {training['median_seconds']:.2f} s (target {TARGET_SECONDS:.0f} s)")
    enc = payload["bpe_encode"]
    print(
        f"encode: {enc['cold_cache_mb_per_s']:.2f} MB/s cold, "
        f"{enc['warm_cache_mb_per_s']:.2f} MB/s warm"
    )
    comp = payload["compression"]
    for name in ("bpe", "sp_bpe", "sp_unigram"):
        print(f"{name:>10}: {comp[name]['tokens_per_char']:.4f} tokens/char")
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
