"""The PRM-quality study's analysis on hand-made scores with known answers: gains over majority
vote at matched FLOPs, REBASE on the Pareto front, weighted vote against majority vote, the
paper's headline, the balance temperature, the seeds' spread; and its report's files."""

from __future__ import annotations

import csv
import json
import math
import re
from base64 import b64decode
from dataclasses import replace

import pytest

from inferscale.analysis.prm_quality import (
    CSV_COLUMNS,
    PRMVariant,
    by_budget,
    gain_over_majority,
    prm_quality_summary,
    spread,
    threshold,
)
from inferscale.report.prm_quality import write_prm_quality_report
from inferscale.scores import QuestionScore

PNG = b"\x89PNG\r\n\x1a\n"
SEARCHED = [f"q{i}" for i in range(8)]
IDS = SEARCHED + ["q8", "q9"]  # q8 and q9 are voted on, never searched


def rows(strategy, budget, accuracies, flops, ids=IDS):
    return [
        QuestionScore(i, 1, strategy, budget, float(a), 1.0, flops, 2 * flops, 10 * flops)
        for i, a in zip(ids, accuracies, strict=True)
    ]


def base_scores():
    # On the searched questions S's majority vote errs 0.75, 0.5, 0.5 at 1, 2, 4 samples
    # (1, 2, 4 FLOPs); L's errs 0.5, 0.25, 0 at 5, 10, 20 FLOPs.
    s = rows("greedy", 1, [1, 1, 0, 0, 0, 0, 0, 0, 1, 1], 1)
    s += rows("majority_vote", 1, [1, 1, 0, 0, 0, 0, 0, 0, 1, 1], 1)
    s += rows("majority_vote", 2, [1, 1, 1, 1, 0, 0, 0, 0, 1, 1], 2)
    s += rows("majority_vote", 4, [1, 1, 1, 1, 0, 0, 0, 0, 1, 1], 4)
    s += rows("best_of_n", 4, [1] * 10, 4)  # the base's own PRM strategies are ignored
    large = rows("greedy", 1, [1, 1, 1, 1, 0, 0, 0, 0, 1, 1], 5)
    large += rows("majority_vote", 1, [1, 1, 1, 1, 0, 0, 0, 0, 1, 1], 5)
    large += rows("majority_vote", 2, [1, 1, 1, 1, 1, 1, 0, 0, 1, 1], 10)
    large += rows("majority_vote", 4, [1] * 10, 20)
    return {"S": s, "L": large}


def variant(name, kind, auc_exact, auc_rollout, s_rebase, s_weighted, seed=None, sweep=None):
    """S's REBASE (width 4, 3 FLOPs) and weighted vote (4 samples) as given; L's weighted vote
    equals its majority vote and its REBASE (12 FLOPs) is dominated by its 2-sample vote."""
    mv4 = [1, 1, 1, 1, 0, 0, 0, 0, 1, 1]
    s = rows("weighted_vote", 4, s_weighted, 4) + rows("best_of_n", 4, mv4, 4)
    s += rows("rebase", 4, s_rebase, 3, SEARCHED)
    large = rows("weighted_vote", 4, [1] * 10, 20) + rows("best_of_n", 4, [1] * 10, 20)
    large += rows("rebase", 4, [1, 1, 1, 1, 1, 1, 0, 0], 12, SEARCHED)
    balance = {"S": {tb: rows("rebase", 4, acc, 3, SEARCHED) for tb, acc in (sweep or {}).items()}}
    return PRMVariant(
        name=name,
        kind=kind,
        labels="rollout" if kind == "learned" else None,
        seed=seed,
        requested_auc=None if kind == "learned" else auc_exact,
        heldout={"step_auc_exact": auc_exact, "step_auc": auc_rollout, "steps": 100},
        scores={"S": s, "L": large},
        balance=balance,
    )


HALF = [1, 1, 1, 1, 0, 0, 0, 0]
SWEEP = {
    0.05: HALF,
    0.1: HALF,
    0.2: [1, 1, 1, 1, 1, 1, 0, 0],
    0.5: [1] * 8,
    1.0: [1, 1, 1, 1, 1, 1, 1, 0],
}
VARIANTS = [
    variant("noisy-0.7", "noisy_oracle", 0.7, 0.66, HALF, [1, 1, 1, 1, 0, 0, 0, 0, 1, 1]),
    variant(
        "noisy-0.9", "noisy_oracle", 0.9, 0.80, [1, 1, 1, 1, 1, 1, 0, 0], [1] * 6 + [0, 0, 1, 1]
    ),
    variant("oracle", "oracle", 1.0, 0.88, [1] * 8, [1] * 10, sweep=SWEEP),
    variant("learned-seed0", "learned", 0.75, 0.82, HALF, [1] * 6 + [0, 0, 1, 1], seed=0),
    variant("learned-seed1", "learned", 0.78, 0.81, HALF, HALF + [1, 1], seed=1),
    variant("learned-seed2", "learned", 0.80, 0.83, HALF, [1] * 3 + [0] * 5 + [1, 1], seed=2),
]


@pytest.fixture(scope="module")
def summary():
    return prm_quality_summary(base_scores(), {"S": 10, "L": 50}, VARIANTS, set(SEARCHED))


def test_matched_flops_interpolates_in_log_flops_with_a_paired_stderr():
    majority = by_budget(
        rows("majority_vote", 1, [0, 0], 10, ["a", "b"])
        + rows("majority_vote", 2, [0.5, 0], 20, ["a", "b"])
        + rows("majority_vote", 4, [1, 1], 40, ["a", "b"]),
        "majority_vote",
    )
    # 10 * sqrt(2) FLOPs is half-way between 1 and 2 samples in log FLOPs: majority vote's
    # accuracy there is 0.25 and 0, the strategy's 1 and 0.
    strategy = {s.id: s for s in rows("rebase", 4, [1, 0], 10 * math.sqrt(2), ["a", "b"])}
    g = gain_over_majority(strategy, majority, "paper")
    assert g["matched_budgets"][:2] == [1, 2]
    assert g["matched_budgets"][2] == pytest.approx(0.5)
    assert g["majority_error"] == pytest.approx(1 - 0.125)
    assert g["gain"] == pytest.approx(0.375)
    # deltas 0.75 and 0: stdev 0.75 / sqrt(2), over sqrt(2) questions
    assert g["gain_stderr"] == pytest.approx(0.375)
    # Full accounting doubles every cost here: the same weights, the same gain.
    assert gain_over_majority(strategy, majority, "full")["gain"] == pytest.approx(0.375)


def test_no_gain_outside_majority_votes_range():
    majority = by_budget(
        rows("majority_vote", 1, [0], 10, ["a"]) + rows("majority_vote", 2, [1], 20, ["a"]),
        "majority_vote",
    )
    for flops in (5, 21):
        g = gain_over_majority({"a": rows("rebase", 4, [1], flops, ["a"])[0]}, majority, "paper")
        assert g["gain"] is None and g["gain_stderr"] is None
        assert "outside majority vote's FLOPs range" in g["note"]
        assert g["error"] == 0.0


def test_weighted_vote_at_n_costs_majority_vote_at_n_so_its_gain_is_the_plain_difference(
    summary,
):
    g = next(
        g
        for g in summary["gains"]
        if (g["policy"], g["variant"], g["strategy"], g["budget"])
        == ("S", "noisy-0.9", "weighted_vote", 4)
    )
    assert g["matched_budgets"] == [4, 4, 0.0]
    assert g["questions"] == 10  # votes are compared on every question
    assert g["gain"] == pytest.approx(0.2)
    assert g["error"] == pytest.approx(0.2) and g["majority_error"] == pytest.approx(0.4)
    rebase = next(
        g
        for g in summary["gains"]
        if (g["policy"], g["variant"], g["strategy"]) == ("S", "oracle", "rebase")
    )
    # REBASE on the searched questions only, at 3 FLOPs: between 2 and 4 samples, which agree.
    assert rebase["questions"] == 8 and rebase["matched_budgets"][:2] == [2, 4]
    assert rebase["matched_budgets"][2] == pytest.approx(math.log(1.5) / math.log(2))
    assert rebase["gain"] == pytest.approx(0.5)


def test_rebase_lands_on_the_front_at_the_lowest_auc_where_it_beats_cheaper_points(summary):
    by_variant = {p["variant"]: p for p in summary["pareto"]["variants"]}
    assert [(p["policy"], p["budget"]) for p in by_variant["oracle"]["rebase_on_front"]] == [
        ("S", 4)
    ]
    assert by_variant["noisy-0.9"]["rebase_on_front"][0]["error"] == pytest.approx(0.25)
    # At an error of 0.5, S's 2-sample vote (2 FLOPs) dominates REBASE (3 FLOPs).
    assert not by_variant["noisy-0.7"]["on_front"]
    assert not by_variant["learned-seed2"]["on_front"]
    exact = summary["pareto"]["threshold"]["auc_exact"]
    assert (exact["first_auc"], exact["first_variant"], exact["stays"]) == (0.9, "noisy-0.9", True)
    # Against rollout labels the learned PRMs (0.81-0.83, off the front) sit between noisy-0.9
    # (0.80, on it) and the oracle (0.88).
    rollout = summary["pareto"]["threshold"]["auc_rollout"]
    assert (rollout["first_auc"], rollout["stays"]) == (0.80, False)
    assert (rollout["holds_from_auc"], rollout["holds_from_variant"]) == (0.88, "oracle")


def test_threshold_order_and_stay():
    t = threshold([(0.8, "b", True), (0.7, "a", False), (None, "x", True), (1.0, "d", True)])
    assert (t["first_auc"], t["stays"], t["holds_from_auc"]) == (0.8, True, 0.8)
    assert [o["variant"] for o in t["order"]] == ["a", "b", "d"]
    t = threshold([(0.7, "a", False), (0.8, "b", True), (0.9, "c", False), (1.0, "d", True)])
    assert (t["first_auc"], t["stays"], t["holds_from_auc"]) == (0.8, False, 1.0)
    t = threshold([(0.7, "a", False), (0.9, "b", False)])
    assert (t["first_auc"], t["stays"], t["holds_from_auc"]) == (None, False, None)


def test_weighted_beats_majority_by_more_than_one_stderr(summary):
    c = {(c["variant"], c["policy"]): c for c in summary["weighted_vs_majority"]["comparisons"]}
    # Two more right of ten: -0.2 against a paired stderr of 0.133.
    s = c[("noisy-0.9", "S")]
    assert s["difference"] == pytest.approx(-0.2)
    assert s["stderr"] == pytest.approx(math.sqrt((8 * 0.04 + 2 * 0.64) / 9) / math.sqrt(10))
    assert s["beats"] and not s["lower_by_2se"]
    assert not c[("noisy-0.7", "S")]["beats"]  # the same answers: no difference
    assert not c[("oracle", "L")]["beats"]  # L's weighted vote equals its majority vote
    t = summary["weighted_vs_majority"]["threshold"]
    # learned-seed0 (exact AUC 0.75) already beats by more than one stderr, seed1 does not.
    assert (t["S"]["auc_exact"]["first_auc"], t["S"]["auc_exact"]["stays"]) == (0.75, False)
    assert t["S"]["auc_exact"]["holds_from_auc"] == 0.9
    assert t["L"]["auc_exact"]["first_auc"] is None


def test_headline_verdicts_both_ways(summary):
    c = {c["variant"]: c for c in summary["headline"]["comparisons"]}
    # S's REBASE at 3 FLOPs against L's 1-sample vote (5 FLOPs, the cheapest costing no less).
    assert all(x["majority_budget"] == 1 for x in c.values())
    oracle = c["oracle"]  # errs 0 against 0.5: -0.5, stderr sqrt(2/7)/sqrt(8)
    assert oracle["difference"] == pytest.approx(-0.5)
    assert oracle["stderr"] == pytest.approx(math.sqrt(2 / 7) / math.sqrt(8))
    assert oracle["holds"] and oracle["lower_by_1se"]
    noisy = c["noisy-0.9"]  # -0.25 against 0.164: below by one stderr, not by two
    assert noisy["difference"] == pytest.approx(-0.25)
    assert noisy["lower_by_1se"] and not noisy["holds"]
    assert c["noisy-0.7"]["difference"] == 0 and not c["noisy-0.7"]["lower_by_1se"]
    t = summary["headline"]["threshold"]["auc_exact"]
    assert (t["first_auc"], t["first_variant"], t["stays"]) == (1.0, "oracle", True)


def test_headline_needs_a_large_vote_costing_as_much():
    base = base_scores()
    base["L"] = [s for s in base["L"] if s.strategy != "majority_vote" or s.budget == 1]
    cheap = [
        QuestionScore(s.id, s.level, s.strategy, s.budget, s.accuracy, 1.0, 1.0, 1.0, 1.0)
        for s in base["L"]
    ]
    summary = prm_quality_summary(
        {"S": base["S"], "L": cheap}, {"S": 1, "L": 2}, VARIANTS[2:3], set(SEARCHED)
    )
    (c,) = summary["headline"]["comparisons"]
    assert c["majority_budget"] is None and not c["holds"]
    assert "never costs as much" in c["note"]


def test_balance_temperature_table(summary):
    (b,) = summary["balance"]
    assert (b["policy"], b["variant"], b["width"], b["best_tb"]) == ("S", "oracle", 4, 0.5)
    errors = {t["tb"]: t["error"] for t in b["temperatures"]}
    assert errors == pytest.approx({0.05: 0.5, 0.1: 0.5, 0.2: 0.25, 0.5: 0.0, 1.0: 0.125})
    assert b["best_against"]["0.1"]["difference"] == pytest.approx(-0.5)
    assert b["best_against"]["0.1"]["beyond_noise"]
    assert b["best_against"]["0.2"]["difference"] == pytest.approx(-0.25)
    assert not b["best_against"]["0.2"]["beyond_noise"]
    sweep_rows = [r for r in summary["rows"] if r["tb"] is not None]
    assert sorted(r["tb"] for r in sweep_rows) == [0.05, 0.1, 0.2, 0.5, 1.0]


def test_a_difference_is_called_only_beyond_the_seeds_spread():
    assert spread([0.2, 0.25, 0.3], [0.05] * 3)["called"]
    # Mean 0.36 above the std (0.33) and the stderr, but one seed says the opposite.
    flipped = spread([0.5, 0.6, -0.01], [0.01] * 3)
    assert flipped["mean"] > flipped["std"] and not flipped["called"]
    assert not spread([0.02, 0.03, 0.025], [0.05] * 3)["called"]  # inside one stderr
    assert not spread([0.05, 0.1, 0.9], [0.01] * 3)["called"]  # mean 0.35 inside std 0.48
    assert not spread([0.3], [0.01])["called"]  # one seed is no spread
    assert not spread([0.3, None, 0.2], [0.01] * 3)["called"]  # a seed without it


def test_seeds_give_each_headline_comparison_as_a_spread(summary):
    seeds = summary["seeds"]["rollout"]
    assert seeds["seeds"] == [0, 1, 2]
    assert seeds["auc_exact"]["mean"] == pytest.approx(0.7766666666)
    gain = next(
        g["gain"]
        for g in seeds["gains"]
        if (g["policy"], g["strategy"], g["budget"]) == ("S", "weighted_vote", 4)
    )
    # +0.2, 0, -0.1 over the seeds: the sign flips, nothing is called.
    assert (gain["min"], gain["max"]) == pytest.approx((-0.1, 0.2)) and not gain["called"]
    assert seeds["rebase_on_front"] == {"seeds_on_front": 0, "seeds": 3, "called": True}
    (headline,) = seeds["headline"]
    assert headline["difference"]["mean"] == 0 and not headline["difference"]["called"]


def test_rows_for_the_csv(summary):
    rows = summary["rows"]
    assert all(tuple(r) == CSV_COLUMNS for r in rows)
    r = next(
        r
        for r in rows
        if (r["policy"], r["variant"], r["strategy"]) == ("S", "noisy-0.9", "weighted_vote")
    )
    assert (r["kind"], r["requested_auc"], r["auc_exact"], r["auc_rollout"]) == (
        "noisy_oracle",
        0.9,
        0.9,
        0.80,
    )
    assert r["gain"] == pytest.approx(0.2) and r["flops"] == 4
    json.dumps(summary)


def test_report_writes_its_files_names_every_variant_and_embeds_pngs(summary, tmp_path):
    page = write_prm_quality_report(tmp_path, summary, title="synthetic")
    assert page == tmp_path / "prm_quality.html"
    for name in ("prm_quality_gain.png", "balance_temperature.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG)
    text = page.read_text()
    for v in VARIANTS:
        assert v.name in text
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', text)
    assert len(images) == 2 == text.count("<img ")
    assert all(b64decode(i).startswith(PNG) for i in images)
    assert (
        "REBASE lands on the Pareto front first at an AUC of 0.900 (noisy-0.9) against exact "
        "validity and at every higher one" in text
    )
    assert "holds first at an AUC of 1.000 (oracle) against exact validity" in text
    # L's REBASE (12 FLOPs) loses 2 log2(1.2) / 8 = 0.066 to majority vote between 2 and 4
    # samples (10 and 20 FLOPs) for every seed: called, with its sign.
    assert "called beyond its seeds' spread: L REBASE (4 width) gain (-0.066)." in text
    assert "Against exact validity it sits between noisy-0.7 and noisy-0.9." in text
    assert json.loads((tmp_path / "prm_quality.json").read_text()) == json.loads(
        json.dumps(summary)
    )
    with (tmp_path / "prm_quality.csv").open() as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0]) == CSV_COLUMNS and len(table) == len(summary["rows"])
    assert not list(tmp_path.glob("*.tmp"))


def test_an_oracle_unmeasured_against_exact_validity_counts_at_its_requested_auc():
    oracle = variant("oracle", "oracle", None, 0.88, [1] * 8, [1] * 10)
    oracle = replace(oracle, requested_auc=1.0)
    learned = variant("learned-seed0", "learned", None, 0.82, [1] * 8, [1] * 10, seed=0)
    summary = prm_quality_summary(base_scores(), {"S": 1, "L": 2}, [oracle, learned], {"q0"})
    assert [v["auc_exact"] for v in summary["variants"]] == [1.0, None]
    order = summary["pareto"]["threshold"]["auc_exact"]["order"]
    assert [o["variant"] for o in order] == ["oracle"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"accounting": "tokens"}, "accounting 'tokens' is unknown; give 'paper' or 'full'"),
        ({"params": {"S": 1, "M": 2}}, "need the base evaluation's scores of each"),
        ({"search_ids": set()}, "no searched questions"),
        ({"variants": VARIANTS[:1] * 2}, "repeat one"),
        ({"params": {"S": 1}}, "variant noisy-0.7 has scores of ['L']"),
    ],
)
def test_inputs_that_do_not_fit_are_named(change, message):
    args = {
        "base": base_scores(),
        "params": {"S": 10, "L": 50},
        "variants": VARIANTS[:1],
        "search_ids": set(SEARCHED),
        "accounting": "paper",
    }
    with pytest.raises(ValueError, match=re.escape(message)):
        prm_quality_summary(**{**args, **change})
