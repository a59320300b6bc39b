"""The nanoGPT side-by-side benchmark's own logic (no nanoGPT checkout needed).

The benchmark itself runs only by hand (``python benchmarks/bench_nanogpt.py --nanogpt DIR``);
these tests check the parts that decide whether its comparison is fair: both sides see the
same ids, the tinytrans builds match nanoGPT's parameter count, and a missing checkout is
reported instead of crashing ``make benchmarks``.
"""

from __future__ import annotations

import importlib.util
import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from tinytrans import sizing
from tinytrans.data import DataModule

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(
        "bench_nanogpt", ROOT / "benchmarks" / "bench_nanogpt.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_nanogpt_dataset_holds_the_ids_tinytrans_uses(bench, tmp_path):
    text = "To be, or not to be, that is the question.\n" * 40
    data = DataModule("char", text=text, context_length=16).setup()
    folder = bench.write_nanogpt_dataset(data, tmp_path / "data" / "shakespeare_char")
    assert np.array_equal(np.fromfile(folder / "train.bin", dtype=np.uint16), data.train_tokens)
    assert np.array_equal(np.fromfile(folder / "val.bin", dtype=np.uint16), data.val_tokens)
    meta = pickle.loads((folder / "meta.pkl").read_bytes())
    assert meta["vocab_size"] == data.tokenizer.vocab_size
    decoded = "".join(meta["itos"][int(i)] for i in data.val_tokens)
    assert decoded == data.tokenizer.decode(data.val_tokens.tolist())
    assert all(meta["stoi"][s] == i for i, s in meta["itos"].items())


@pytest.mark.parametrize("index", [0, 1])
def test_tinytrans_builds_match_nanogpts_size(bench, index):
    shape = bench.SHAPES[index]
    configs = bench.tinytrans_configs(shape, vocab_size=65)
    # nanoGPT's GPT without biases: tied embedding, learned positions, 12 d^2 per block and
    # 2 LayerNorm weights per block plus the final one.
    d, L = shape.d_model, shape.n_layers
    nanogpt = 65 * d + shape.block * d + L * (12 * d * d + 2 * d) + d
    # tinytrans's LayerNorms keep their biases (bias=False drops the Linear ones only): one
    # d-vector per norm, 2 per block and the final one, 0.14 % of the README model.
    layernorm_biases = (2 * L + 1) * d
    assert sizing.count_parameters(configs["gpt2-style"]) == nanogpt + layernorm_biases
    assert abs(sizing.count_parameters(configs["course"]) / nanogpt - 1) < 0.02
    assert configs["course"].positional == "rope" and configs["gpt2-style"].positional == "learned"


def test_no_checkout_is_a_recorded_skip(bench, tmp_path, monkeypatch):
    import _common

    monkeypatch.setattr(_common, "RESULTS_DIR", tmp_path)
    monkeypatch.delenv("NANOGPT_DIR", raising=False)
    assert bench.main([]) == 0
    result = json.loads((tmp_path / "nanogpt.json").read_text())
    assert "--nanogpt DIR" in result["skipped"] and result["pinned_commit"] == bench.PINNED_COMMIT


def test_a_folder_that_is_not_nanogpt_names_what_is_missing(bench, tmp_path):
    (tmp_path / "model.py").write_text("")
    with pytest.raises(
        SystemExit, match=r"not a nanoGPT checkout \(no train\.py, configurator\.py\)"
    ):
        bench.open_checkout(tmp_path)


def test_operators_fall_into_the_profile_categories(bench):
    assert bench.profile_category("aten::addmm") == "matrix products"
    assert bench.profile_category("aten::_scaled_dot_product_flash_attention_for_cpu") == (
        "attention kernel"
    )
    assert bench.profile_category("aten::gelu_backward") == "activation"
    assert bench.profile_category("aten::native_layer_norm") == "normalisation"
    assert bench.profile_category("aten::mul") == "other"


def test_the_profile_splits_a_step_into_shares_that_sum_to_one(bench):
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 8))
    optimizer = torch.optim.AdamW(model.parameters(), foreach=False)  # many small kernels
    x = torch.randn(32, 64)

    def step() -> None:
        model(x).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    shares = bench.profile_step(step, steps=3)
    parts = {k: v for k, v in shares.items() if k.startswith("share_")}
    assert sum(parts.values()) == pytest.approx(1.0)
    assert set(parts) == {"share_matrix_products", "share_attention_kernel", "share_activation",
                          "share_normalisation", "share_optimizer", "share_other"}  # fmt: skip
    # the optimizer's element-wise kernels count as the optimizer, not as "other"
    assert parts["share_optimizer"] > 0.1 and parts["share_matrix_products"] > 0
    assert parts["share_activation"] > 0 and shares["ms_per_step"] > 0
