"""bench/paper_scale.py: the tokens an evaluation plan generates and the GPU hours they take."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import gpu_generation  # noqa: E402
import paper_scale  # noqa: E402
from paper_scale import Assumptions, Gpu  # noqa: E402

from inferscale.config import load_config  # noqa: E402
from inferscale.evaluation import (  # noqa: E402
    GREEDY_STORE,
    pool_prm_store,
    pool_store,
    tree_store,
)

LLEMMA = Path(__file__).resolve().parents[1] / "configs" / "llemma.yaml"
SMALL = [
    "evaluation.budgets=[1, 2, 4]",
    "evaluation.search.budgets={rebase: [2, 4], mcts: [8], beam_search: [4]}",
    "evaluation.search.limit=4",
]
SEVEN, THIRTY_FOUR = "EleutherAI/llemma_7b", "EleutherAI/llemma_34b"
MEASURED = {
    "device": "NVIDIA H200",
    "device_memory_bytes": 150e9,
    "copy_bandwidth_bytes_per_second": 4e12,
    "models": [
        {"name": SEVEN, "rows": [{"batch": 256, "tokens_per_second": 1000.0}],
         "prefill": {"tokens_per_second": 5000.0}},
        {"name": THIRTY_FOUR, "rows": [{"batch": 256, "tokens_per_second": 500.0}],
         "prefill": {"tokens_per_second": 2000.0}},
    ],
}  # fmt: skip


def small_config(*more):
    return load_config(LLEMMA, [*SMALL, *more])


def test_each_planned_store_costs_its_strategys_tokens():
    config = small_config()
    questions, searched = paper_scale.limited(config, 10)
    assert (questions, searched) == (10, 4)
    stores = paper_scale.store_tokens(config, 10, 4, Assumptions(100, 4, 128, 256))
    # MCTS nodes are one step: 100 tokens / 4 steps.
    assert stores == {
        GREEDY_STORE: {"questions": 10, "generated": 1000, "prm_read": 0},
        pool_store(4): {"questions": 10, "generated": 4000, "prm_read": 0},
        pool_prm_store(4): {"questions": 10, "generated": 0, "prm_read": 4000},
        tree_store("rebase", 2): {"questions": 4, "generated": 800, "prm_read": 800},
        tree_store("rebase", 4): {"questions": 4, "generated": 1600, "prm_read": 1600},
        tree_store("mcts", 8): {"questions": 4, "generated": 800, "prm_read": 800},
        tree_store("beam_search", 4): {"questions": 4, "generated": 1600, "prm_read": 1600},
    }


def test_an_mcts_node_is_at_most_max_step_tokens():
    config = small_config("evaluation.search.max_step_tokens=20")
    stores = paper_scale.store_tokens(config, 10, 4, Assumptions(100, 4, 128, 256))
    assert stores[tree_store("mcts", 8)] == {"questions": 4, "generated": 640, "prm_read": 640}


def test_hours_from_measured_rates_scale_linearly_over_gpus():
    config = small_config()
    result = paper_scale.estimate(
        config, 10, 4, Assumptions(100, 4, 128, 256), paper_scale.gpu_from(MEASURED, ""), MEASURED
    )
    small, large = result["policies"]
    # 9,800 tokens generated (1,000 + 4,000 + 800 + 1,600 + 800 + 1,600), 8,800 read by the PRM.
    assert (small["generated_tokens"], small["prm_read_tokens"]) == (9800, 8800)
    assert small["paper_flops"] == 9800 * 2 * 7e9  # paper_params: nominal
    assert large["paper_flops"] == 9800 * 2 * 34e9
    # Both policies' PRM reads go at the PRM's rate: it starts from Llemma-34B.
    assert small["gpu_hours"]["measured"] == pytest.approx((9800 / 1000 + 8800 / 2000) / 3600)
    assert large["gpu_hours"]["measured"] == pytest.approx((9800 / 500 + 8800 / 2000) / 3600)
    total = small["gpu_hours"]["measured"] + large["gpu_hours"]["measured"]
    eight, sixty_four = result["runs"]
    assert eight["hours"]["measured"] == pytest.approx(total / 8)
    assert sixty_four["hours"]["measured"] == pytest.approx(total / 64)
    assert sixty_four["shards"] == {"llemma-7b": 64, "llemma-34b": 64}
    # The bound decodes at the measured copy bandwidth, the mean context being prompt + T / 2.
    assert small["rates"]["bound"]["decode_tokens_per_second"] == gpu_generation.decode_bound(
        gpu_generation.SHAPES[SEVEN], 256, 128 + 50, 4e12
    )


def test_decode_bound_reads_all_weights_but_the_input_embedding_and_the_kv_cache():
    seven = gpu_generation.SHAPES[SEVEN]
    assert gpu_generation.weight_bytes(seven) == 2 * 6_738_546_688
    assert gpu_generation.weight_bytes(gpu_generation.SHAPES[THIRTY_FOUR]) == 2 * 33_743_970_304
    assert gpu_generation.kv_bytes_per_token(gpu_generation.SHAPES[THIRTY_FOUR]) == 196_608
    read = 2 * (6_738_546_688 - 32016 * 4096)
    assert gpu_generation.decode_bound(seven, 1, 0, 1e12) == pytest.approx(1e12 / read)
    assert gpu_generation.decode_bound(seven, 4, 10, 1e12) == pytest.approx(
        4e12 / (read + 4 * 10 * 524_288)
    )


@pytest.mark.parametrize(("memory", "gpus"), [(20e9, 1), (10e9, 2), (8e9, 2), (7e9, 4)])
def test_gpus_per_shard_hold_the_weights_and_the_batchs_kv(memory, gpus):
    # 13,477,093,376 weight bytes + 2 x (100 + 100) x 524,288 KV bytes = 13,686,808,576.
    gpu = Gpu("g", memory, 1e12, 1e15)
    shape = gpu_generation.SHAPES[SEVEN]
    assert paper_scale.gpus_per_shard(shape, Assumptions(100, 4, 100, 2), gpu, 0.9) == gpus


def test_llemma_tokens_and_the_papers_sampling_cost():
    config = load_config(LLEMMA)
    questions, searched = paper_scale.question_counts(config, paper_scale.SPLIT_SIZES)
    assert (questions, searched) == (500 + 1319, 1819)
    stores = paper_scale.store_tokens(config, questions, searched, Assumptions(280, 8, 128, 256))
    # A question: greedy 280, the pool 256 x 280, REBASE and beam search (16 + 32 + 64) x 280
    # each, MCTS (32 + 64 + 128) x 35.
    per_question = 280 + 256 * 280 + 2 * 112 * 280 + 224 * 35
    assert sum(s["generated"] for s in stores.values()) == 1819 * per_question
    # Wu et al.: Llemma-7B sampling 256 costs 10.0e14 FLOPs a question (7e9 x 2 per token).
    pool = stores[pool_store(256)]["generated"] / questions
    assert f"{pool * 2 * 7e9:.3g}" == "1e+15"


def test_cli_writes_the_estimate(tmp_path, monkeypatch, capsys):
    measured = tmp_path / "measured.json"
    measured.write_text(json.dumps(MEASURED))
    out = tmp_path / "paper_scale.json"
    argv = ["paper_scale", "--measured", str(measured), "--questions", "10", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    paper_scale.main()
    result = json.loads(out.read_text())
    assert result["questions"] == 10 and result["measured"] is True
    assert [r["gpus"] for r in result["runs"]] == [8, 64]
    assert " 64 GPUs" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--solution-tokens", "2000"], "exceeds generation.max_new_tokens 1024"),
        (["--batch", "64"], "not --batch 64"),
        (["--gpu", "TPU"], "no figures for GPU 'TPU'"),
        (["--steps-per-solution", "0"], "--steps-per-solution must be positive, got 0"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, monkeypatch, capsys, args, message):
    measured = tmp_path / "measured.json"
    measured.write_text(json.dumps(MEASURED))
    out = tmp_path / "paper_scale.json"
    with_measured = [] if args[0] == "--gpu" else ["--measured", str(measured)]
    monkeypatch.setattr(sys, "argv", ["paper_scale", *with_measured, *args, "--out", str(out)])
    with pytest.raises(SystemExit) as exit_info:
        paper_scale.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_a_measured_share_of_the_bound_slows_decoding_only():
    config = small_config()
    share = paper_scale.share_of_bound(
        {"rows": [{"batch": 64, "share_of_bound": 0.5}, {"batch": 256, "share_of_bound": 0.25}]},
        256,
    )
    assert share == 0.25
    gpu = paper_scale.gpu_from(MEASURED, "")
    result = paper_scale.estimate(config, 10, 4, Assumptions(100, 4, 128, 256), gpu, None, share)
    small = result["policies"][0]
    bound, slowed = small["rates"]["bound"], small["rates"]["measured_share"]
    assert slowed["decode_tokens_per_second"] == bound["decode_tokens_per_second"] * 0.25
    assert slowed["prm_tokens_per_second"] == bound["prm_tokens_per_second"]
    with pytest.raises(ValueError, match="not 128"):
        paper_scale.share_of_bound({"rows": [{"batch": 256, "share_of_bound": 0.2}]}, 128)
