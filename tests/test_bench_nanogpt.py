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


def _profile_row(bench, side: str, ms: float, **shares: float) -> dict:
    names = [*bench.PROFILE_CATEGORIES, "optimizer", "other"]
    row = {"shape": "README", "side": side, "rounds": 3, "ms_per_step": ms}
    return row | {bench.share_key(n): shares.get(n.split()[0], 0.0) for n in names}


def test_the_goal_analysis_separates_the_models_kernels_from_the_rest(bench):
    nano = _profile_row(bench, "nanoGPT", 50.0, matrix=0.6, attention=0.1, other=0.3)
    # 35 ms of the same kernels and 5 ms else: already 1.25x, at most 50 / 35 = 1.43x
    fast = _profile_row(bench, "gpt2-style", 40.0, matrix=0.75, attention=0.125, other=0.125)
    assert bench.model_kernel_ms(fast) == pytest.approx(35.0)
    analysis = bench.goal_analysis(nano, fast, 1.2)
    assert analysis["ratio_profiled"] == pytest.approx(1.25)
    assert analysis["kernel_ceiling"] == pytest.approx(50 / 35)
    assert analysis["rest_cut_for_goal"] == 0.0
    # 45 ms of kernels: 1.2x (41.7 ms) cannot be reached whatever else goes
    slow = _profile_row(bench, "gpt2-style", 55.0, matrix=0.7, attention=45 / 55 - 0.7, other=0.1)
    assert bench.goal_analysis(nano, slow, 1.2)["rest_cut_for_goal"] > 1
    # 40 ms of kernels and 10 ms else: 1.2x (41.7 ms) leaves 1.7 ms of the 10, 83 % must go
    mid = _profile_row(bench, "gpt2-style", 50.0, matrix=0.8, other=0.2)
    assert bench.goal_analysis(nano, mid, 1.2)["rest_cut_for_goal"] == pytest.approx(5 / 6)


def test_findings_are_computed_from_the_rows(bench):
    throughput = [{"shape": "README", "rounds": 20, "ratio_gpt2-style": 1.0449,
                   "ratio_course": 0.9, f"ratio_{bench.COMPILED}": 1.1}]  # fmt: skip
    nano = _profile_row(bench, "nanoGPT", 50.0, matrix=0.6, attention=0.1, other=0.3)
    fast = _profile_row(bench, "gpt2-style", 40.0, matrix=0.75, attention=0.125, other=0.125)
    slow = _profile_row(bench, "course", 55.0, matrix=0.8, attention=0.15, other=0.05)
    for row in (fast, slow):
        row |= bench.goal_analysis(nano, row, bench.GOAL_THROUGHPUT[row["side"]])
    loss = {"budget_s": 99.4, "loss_gain": 0.0868, "nanoGPT": {"iters": 2000, "heldout_loss": 1.886},
            "tinytrans": {"parameters": 801408, "steps": 1850, "context_length": 64,
                          "heldout_loss": 1.722, "optimizer": "muon"}}  # fmt: skip
    sentences = (bench.throughput_findings(throughput) + bench.profile_findings([nano, fast, slow])
                 + bench.loss_findings([loss]))  # fmt: skip
    assert sentences[0].startswith("README: gpt2-style 1.04x, course 0.90x, course-compiled 1.10x")
    assert "(median of 3 alternating rounds)" in sentences[1]
    assert "matrix products 60%, attention kernel 10%" in sentences[1]
    assert sentences[2] == (
        "gpt2-style: 40.0 ms of operators per step against nanoGPT's 50.0 (1.25x), of which the "
        "model's own kernels 35.0 ms against 35.0; with nothing else left it could reach at "
        "most 1.43x, and 1.2x would need 0% of the rest gone."
    )
    # 52.25 ms of kernels against nanoGPT's 50 ms: no cut of the rest reaches 1.0x
    assert sentences[3].endswith("at most 0.96x, and 1.0x is out of reach with these kernels.")
    assert sentences[4].startswith(
        "99 s: tinytrans's 0.80M-parameter model (1,850 steps, context 64, muon)"
    )
    assert sentences[4].endswith("8.7% lower, which meets the 5% goal.")
    kept = loss | {"tinytrans_commit": "e597c70" + "0" * 33}
    assert bench.loss_findings([kept])[0].endswith("goal (run at tinytrans e597c70).")
    assert bench.profile_findings([]) == []


def test_kept_rows_carry_the_commit_they_ran_at(bench, tmp_path, monkeypatch):
    import _common

    checkout = tmp_path / "nanoGPT"
    checkout.mkdir()
    for name in ("model.py", "train.py", "configurator.py"):
        (checkout / name).write_text("")
    results = tmp_path / "results"
    results.mkdir()
    monkeypatch.setattr(_common, "RESULTS_DIR", results)
    monkeypatch.setattr(bench, "RESULTS_DIR", results)
    monkeypatch.setattr(bench, "corpus", lambda: None)  # nothing is measured
    nano = _profile_row(bench, "nanoGPT", 50.0, matrix=0.6, attention=0.1, other=0.3)
    course = _profile_row(bench, "course", 45.0, matrix=0.7, other=0.3)
    course |= bench.goal_analysis(nano, course, 1.0)
    throughput = {"shape": "README", "rounds": 20, "ratio_gpt2-style": 1.01, "ratio_course": 0.9}
    loss = {"budget_s": 99.4, "loss_gain": 0.06, "nanoGPT": {"iters": 2000, "heldout_loss": 1.9},
            "tinytrans": {"parameters": 339744, "steps": 3000, "context_length": 64,
                          "heldout_loss": 1.786}}  # fmt: skip
    earlier = {"tinytrans_commit": "a" * 40, "throughput": [throughput], "profile": [nano, course],
               "equal_wall_clock": [loss]}  # fmt: skip
    (results / "nanogpt.json").write_text(json.dumps(earlier))
    assert bench.main(["--nanogpt", str(checkout), "--keep-throughput", "--keep-losses"]) == 0
    result = json.loads((results / "nanogpt.json").read_text())
    assert result["throughput"] == [throughput] and result["profile"] == [nano, course]
    assert result["throughput_commit"] == "a" * 40
    assert result["equal_wall_clock"][0]["tinytrans_commit"] == "a" * 40
    assert result["findings"][-1].endswith("meets the 5% goal (run at tinytrans aaaaaaa).")
    met = {goal["name"].split(" throughput")[0]: goal["met"] for goal in result["goals"][:2]}
    assert met == {"gpt2-style": False, "course": False}


def test_the_budget_sets_nanogpts_iterations_from_the_marginal_cost(bench):
    # 250 iterations cost 14 s beyond a 6 s start-up: 600 s is 42.4 blocks of 250 after it.
    short, long = 6.0 + 14.0, 6.0 + 28.0
    # (Scaling the short run as a whole would give 30 blocks, counting the start-up 30 times.)
    assert bench.iters_for_budget(600.0, short, long) == 42 * 250
    assert bench.iters_for_budget(10.0, short, long) == 250  # at least one block
    with pytest.raises(RuntimeError, match="took no longer"):
        bench.iters_for_budget(600.0, 30.0, 29.0)
    with pytest.raises(RuntimeError, match="machine busy"):  # a cold first run: 250 look free
        bench.iters_for_budget(600.0, 25.0, 30.0)
