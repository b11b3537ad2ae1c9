"""How good the PRM must be: each PRM variant's strategies against majority vote at matched
FLOPs, REBASE on the Pareto front, weighted vote against majority vote, the paper's headline
(the small policy with REBASE against the large one with majority vote at no more FLOPs), the
balance temperature, and the learned PRM's seeds as a spread. Every comparison is paired over
the same questions, with its standard error; the summary is JSON-able."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from inferscale.analysis.comparisons import paired
from inferscale.scaling.frontier import beyond_noise, on_pareto_front, paired_difference
from inferscale.scores import QuestionScore

VOTES = ("weighted_vote", "best_of_n")
AUC_KINDS = ("auc_exact", "auc_rollout")
# Where each AUC kind sits in a PRM's held-out metrics (`models.prm_metrics.score_heldout`).
HELDOUT_KEYS = {"auc_exact": "step_auc_exact", "auc_rollout": "step_auc"}
# The balance temperatures a sweep's best is held against: the paper's and its official code's.
REFERENCE_TB = (0.1, 0.2)
CSV_COLUMNS = (
    "policy",
    "variant",
    "kind",
    "labels",
    "seed",
    "requested_auc",
    "auc_exact",
    "auc_rollout",
    "strategy",
    "budget",
    "tb",
    "error",
    "stderr",
    "flops",
    "gain",
    "gain_stderr",
    "questions",
)


@dataclass(frozen=True)
class PRMVariant:
    name: str  # "learned-seed0", "learned-exact-seed0", "noisy-0.7", "oracle"
    kind: str  # "learned" | "noisy_oracle" | "oracle"
    labels: str | None  # a learned PRM's training labels: "rollout" | "exact"
    seed: int | None  # a learned PRM's training seed
    requested_auc: float | None  # a noisy oracle's set AUC (1.0 for the oracle)
    heldout: dict  # held-out step metrics: step_auc (rollout labels), step_auc_exact, ...
    # By policy: weighted_vote and best_of_n at every budget, rebase at every width.
    scores: dict[str, list[QuestionScore]]
    # By policy: Tb -> rebase rows at the sweep width.
    balance: dict[str, dict[float, list[QuestionScore]]]

    def auc(self, kind: str) -> float | None:
        """Held-out AUC against `kind`'s labels; an oracle unmeasured against exact validity
        counts at its requested AUC."""
        measured = self.heldout.get(HELDOUT_KEYS[kind])
        if measured is None and kind == "auc_exact" and self.kind != "learned":
            return self.requested_auc
        return measured

    def describe(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "labels": self.labels,
            "seed": self.seed,
            "requested_auc": self.requested_auc,
            **{kind: self.auc(kind) for kind in AUC_KINDS},
            "heldout": self.heldout,
        }


def cost(s: QuestionScore, accounting: str) -> float:
    return s.flops_full if accounting == "full" else s.flops_paper


def by_budget(
    scores: Iterable[QuestionScore], strategy: str, ids: set[str] | None = None
) -> dict[int, dict[str, QuestionScore]]:
    """budget -> question id -> score, for one strategy, on `ids` when given."""
    out: dict[int, dict[str, QuestionScore]] = {}
    for s in scores:
        if s.strategy == strategy and (ids is None or s.id in ids):
            out.setdefault(s.budget, {})[s.id] = s
    return dict(sorted(out.items()))


def mean_cost(rows: Iterable[QuestionScore], accounting: str) -> float:
    return statistics.fmean(cost(s, accounting) for s in rows)


def error_and_stderr(rows: Sequence[QuestionScore]) -> tuple[float, float]:
    accuracies = [s.accuracy for s in rows]
    stderr = statistics.stdev(accuracies) / math.sqrt(len(rows)) if len(rows) > 1 else 0.0
    return 1 - statistics.fmean(accuracies), stderr


@dataclass(frozen=True)
class Matched:
    """Majority vote at a FLOPs level: per-question accuracy, interpolated in log FLOPs between
    budgets `low` and `high` (equal when the level is one budget's) with weight `weight` on
    `high`."""

    accuracy: dict[str, float]
    low: int
    high: int
    weight: float


def matched_majority(
    majority: dict[int, dict[str, QuestionScore]],
    flops: float,
    ids: Sequence[str],
    accounting: str,
) -> Matched | None:
    """Majority vote's accuracy on `ids` at `flops` per question, or None outside its range.

    Mean FLOPs of each budget are taken over `ids`; one weight serves every question, so a
    difference against it stays paired per question."""
    levels = sorted(
        (mean_cost((rows[i] for i in ids), accounting), budget)
        for budget, rows in majority.items()
        if all(i in rows for i in ids)
    )
    for f, budget in levels:
        # A vote over the same pool costs exactly as much: take that budget as it is.
        if math.isclose(f, flops, rel_tol=1e-9):
            return Matched({i: majority[budget][i].accuracy for i in ids}, budget, budget, 0.0)
    for (f_low, low), (f_high, high) in zip(levels, levels[1:], strict=False):
        if f_low < flops < f_high:
            w = (math.log(flops) - math.log(f_low)) / (math.log(f_high) - math.log(f_low))
            accuracy = {
                i: (1 - w) * majority[low][i].accuracy + w * majority[high][i].accuracy for i in ids
            }
            return Matched(accuracy, low, high, w)
    return None


def gain_over_majority(
    rows: dict[str, QuestionScore],
    majority: dict[int, dict[str, QuestionScore]],
    accounting: str,
) -> dict:
    """error(majority vote at the strategy's FLOPs) - error(strategy), paired: positive means the
    strategy helps. `gain` is None outside majority vote's FLOPs range."""
    ids = sorted(i for i in rows if all(i in m for m in majority.values()))
    if not ids:
        raise ValueError(
            "no question scored by both a strategy and every budget of majority vote: give the "
            "base evaluation's scores of the same questions"
        )
    chosen = [rows[i] for i in ids]
    error, stderr = error_and_stderr(chosen)
    flops = mean_cost(chosen, accounting)
    out = {
        "error": error,
        "stderr": stderr,
        "flops": flops,
        "questions": len(ids),
        "gain": None,
        "gain_stderr": None,
        "majority_error": None,
        "matched_budgets": None,
        "note": "",
    }
    matched = matched_majority(majority, flops, ids, accounting)
    if matched is None:
        out["note"] = "outside majority vote's FLOPs range: no matched comparison"
        return out
    gain, gain_stderr = paired_difference(
        [rows[i].accuracy for i in ids], [matched.accuracy[i] for i in ids]
    )
    out.update(
        gain=gain,
        gain_stderr=gain_stderr,
        majority_error=1 - statistics.fmean(matched.accuracy.values()),
        matched_budgets=[matched.low, matched.high, matched.weight],
    )
    return out


def _question_set(strategy: str, search_ids: set[str]) -> set[str] | None:
    return search_ids if strategy == "rebase" else None


def variant_gains(
    variant: PRMVariant,
    base: dict[str, list[QuestionScore]],
    search_ids: set[str],
    accounting: str,
) -> list[dict]:
    """Every strategy and budget of `variant` against majority vote, per policy; votes
    on every question, REBASE on the searched ones."""
    out = []
    for policy, scores in variant.scores.items():
        for strategy in dict.fromkeys(s.strategy for s in scores):
            ids = _question_set(strategy, search_ids)
            majority = by_budget(base[policy], "majority_vote", ids)
            for budget, rows in by_budget(scores, strategy, ids).items():
                g = gain_over_majority(rows, majority, accounting)
                out.append(
                    {
                        "policy": policy,
                        "variant": variant.name,
                        "strategy": strategy,
                        "budget": budget,
                        "tb": None,
                        **g,
                    }
                )
    return out


def pareto(
    variant: PRMVariant,
    base: dict[str, list[QuestionScore]],
    search_ids: set[str],
    accounting: str,
) -> dict:
    """Both policies' points on the searched questions (greedy and majority vote from
    the base, the variant's strategies) on one error-vs-FLOPs front; which REBASE points are on
    it."""
    points = []
    for policy in variant.scores:
        sources = [(s, base[policy]) for s in ("greedy", "majority_vote")]
        sources += [(s, variant.scores[policy]) for s in (*VOTES, "rebase")]
        for strategy, scores in sources:
            for budget, rows in by_budget(scores, strategy, search_ids).items():
                chosen = list(rows.values())
                error, _ = error_and_stderr(chosen)
                points.append(
                    {
                        "policy": policy,
                        "strategy": strategy,
                        "budget": budget,
                        "error": error,
                        "flops": mean_cost(chosen, accounting),
                    }
                )
    front = on_pareto_front([p["flops"] for p in points], [p["error"] for p in points])
    for p, on in zip(points, front, strict=True):
        p["on_front"] = on
    rebase = [p for p in points if p["strategy"] == "rebase" and p["on_front"]]
    return {
        "variant": variant.name,
        "points": points,
        "rebase_on_front": rebase,
        "on_front": bool(rebase),
    }


def _largest(scores: Sequence[QuestionScore], strategy: str) -> list[QuestionScore]:
    rows = by_budget(scores, strategy)
    return list(rows[max(rows)].values()) if rows else []


def _comparison(c) -> dict:
    lower = c.difference < 0
    return {
        "error": c.error,
        "baseline_error": c.baseline_error,
        "difference": c.difference,
        "stderr": c.stderr,
        "questions": c.questions,
        "lower_by_1se": lower and (abs(c.difference) > c.stderr if c.stderr > 0 else True),
        "lower_by_2se": lower and beyond_noise(c.difference, c.stderr),
    }


def weighted_against_majority(
    variant: PRMVariant, base: dict[str, list[QuestionScore]]
) -> list[dict]:
    """Weighted vote against majority vote at the largest budget, per policy, paired;
    `beats` when weighted vote errs less by more than one standard error."""
    out = []
    for policy, scores in variant.scores.items():
        weighted = _largest(scores, "weighted_vote")
        majority = [s for s in base[policy] if s.strategy == "majority_vote"]
        majority = [s for s in majority if weighted and s.budget == weighted[0].budget]
        c = paired(policy, weighted, majority) if weighted and majority else None
        if c is None:
            continue
        row = {"policy": policy, "variant": variant.name, "budget": weighted[0].budget}
        row.update(_comparison(c))
        row["beats"] = row["lower_by_1se"]
        out.append(row)
    return out


def headline(
    variant: PRMVariant,
    base: dict[str, list[QuestionScore]],
    small: str,
    large: str,
    search_ids: set[str],
    accounting: str,
) -> list[dict]:
    """The small policy's REBASE at each width against the large policy's majority vote
    at the smallest budget costing no less (so the small one spends no more), on the searched
    questions, paired. `holds` when the small one errs less by more than two standard errors."""
    out = []
    majority = by_budget(base[large], "majority_vote", search_ids)
    for width, rows in by_budget(variant.scores.get(small, []), "rebase", search_ids).items():
        ids = sorted(rows)
        flops = mean_cost(rows.values(), accounting)
        row = {"variant": variant.name, "width": width, "flops": flops, "majority_budget": None}
        dearer = [
            (mean_cost((m[i] for i in ids), accounting), b)
            for b, m in majority.items()
            if all(i in m for i in ids)
        ]
        dearer = [(f, b) for f, b in dearer if f >= flops or math.isclose(f, flops)]
        if not dearer:
            row.update(holds=False, note=f"{large}'s majority vote never costs as much")
            out.append(row)
            continue
        f, budget = min(dearer, key=lambda fb: fb[1])
        c = paired(variant.name, list(rows.values()), list(majority[budget].values()))
        row.update(majority_budget=budget, majority_flops=f, note="")
        row.update(_comparison(c))
        row["holds"] = row["lower_by_2se"]
        out.append(row)
    return out


def balance(variant: PRMVariant, search_ids: set[str]) -> list[dict]:
    """REBASE error by balance temperature at the sweep width, per policy; the best Tb
    and how it stands against the paper's and the code's temperatures."""
    out = []
    for policy, sweep in variant.balance.items():
        if not sweep:
            continue
        rows = {tb: [s for s in r if s.id in search_ids] for tb, r in sorted(sweep.items())}
        rows = {tb: r for tb, r in rows.items() if r}
        if not rows:
            continue
        table = []
        for tb, r in rows.items():
            error, stderr = error_and_stderr(r)
            table.append(
                {
                    "tb": tb,
                    "error": error,
                    "stderr": stderr,
                    "questions": len(r),
                    "width": r[0].budget,
                }
            )
        best = min(table, key=lambda t: (t["error"], t["tb"]))
        against = {}
        for ref in REFERENCE_TB:
            if ref not in rows:
                continue
            c = paired(str(ref), rows[best["tb"]], rows[ref])
            against[str(ref)] = {
                "difference": c.difference,
                "stderr": c.stderr,
                "beyond_noise": c.difference < 0 and beyond_noise(c.difference, c.stderr),
            }
        out.append(
            {
                "policy": policy,
                "variant": variant.name,
                "width": table[0]["width"],
                "temperatures": table,
                "best_tb": best["tb"],
                "best_against": against,
            }
        )
    return out


def threshold(flags: Sequence[tuple[float | None, str, bool]]) -> dict:
    """Over variants ordered by AUC: the lowest AUC at which the flag first holds, whether it
    holds at every higher AUC, and the lowest AUC from which it holds throughout. Variants
    without that AUC are left out."""
    ordered = sorted((a, n, f) for a, n, f in flags if a is not None)
    first = next(((a, n) for a, n, f in ordered if f), None)
    stays = first is not None and all(f for a, _, f in ordered if a >= first[0])
    since = None
    for a, n, f in reversed(ordered):
        if not f:
            break
        since = (a, n)
    return {
        "first_auc": None if first is None else first[0],
        "first_variant": None if first is None else first[1],
        "stays": stays,
        "holds_from_auc": None if since is None else since[0],
        "holds_from_variant": None if since is None else since[1],
        "order": [{"auc": a, "variant": n, "holds": f} for a, n, f in ordered],
    }


def thresholds(variants: Sequence[PRMVariant], flag: dict[str, bool]) -> dict:
    return {
        kind: threshold([(v.auc(kind), v.name, flag[v.name]) for v in variants if v.name in flag])
        for kind in AUC_KINDS
    }


def spread(values: Sequence[float | None], stderrs: Sequence[float | None] = ()) -> dict:
    """Mean and spread of one quantity over seeds. `called`: at least two seeds, every seed has
    it, its sign is the same (and nonzero) for every seed, and its mean exceeds both the seeds'
    standard deviation and the mean of the seeds' own standard errors."""
    present = [v for v in values if v is not None]
    if not present:
        return {"mean": None, "min": None, "max": None, "std": None, "seeds": 0, "called": False}
    std = statistics.stdev(present) if len(present) > 1 else 0.0
    mean = statistics.fmean(present)
    errors = [s for s in stderrs if s is not None]
    one_se = statistics.fmean(errors) if errors else 0.0
    same_sign = all(v > 0 for v in present) or all(v < 0 for v in present)
    called = (
        len(present) == len(values) >= 2 and same_sign and abs(mean) > std and abs(mean) > one_se
    )
    return {
        "mean": mean,
        "min": min(present),
        "max": max(present),
        "std": std,
        "seeds": len(present),
        "stderr": one_se,
        "called": called,
    }


def _over_seeds(
    per_seed: Sequence[list[dict]], key: Sequence[str], value: str, stderr: str
) -> list[dict]:
    """Rows matched across seeds by `key`, each with the spread of `value`."""
    groups: dict[tuple, list[dict | None]] = {}
    for i, rows in enumerate(per_seed):
        for r in rows:
            groups.setdefault(tuple(r[k] for k in key), [None] * len(per_seed))[i] = r
    out = []
    for k, rows in groups.items():
        values = [None if r is None else r.get(value) for r in rows]
        stderrs = [None if r is None else r.get(stderr) for r in rows]
        out.append({**dict(zip(key, k, strict=True)), value: spread(values, stderrs)})
    return out


def seed_spreads(
    variants: Sequence[PRMVariant], results: dict[str, dict[str, list[dict] | dict]]
) -> dict:
    """Per label kind of the learned PRM, every headline comparison over its seeds."""
    out = {}
    learned = [v for v in variants if v.kind == "learned"]
    for labels in dict.fromkeys(v.labels for v in learned):
        group = sorted((v for v in learned if v.labels == labels), key=lambda v: v.seed or 0)
        r = [results[v.name] for v in group]
        on_front = [p["pareto"]["on_front"] for p in r]
        out[str(labels)] = {
            "variants": [v.name for v in group],
            "seeds": [v.seed for v in group],
            **{kind: spread([v.auc(kind) for v in group]) for kind in AUC_KINDS},
            "gains": _over_seeds(
                [p["gains"] for p in r], ("policy", "strategy", "budget"), "gain", "gain_stderr"
            ),
            "rebase_on_front": {
                "seeds_on_front": sum(on_front),
                "seeds": len(on_front),
                "called": len(on_front) >= 2 and len(set(on_front)) == 1,
            },
            "weighted_vs_majority": _over_seeds(
                [p["weighted_vs_majority"] for p in r],
                ("policy", "budget"),
                "difference",
                "stderr",
            ),
            "headline": _over_seeds([p["headline"] for p in r], ("width",), "difference", "stderr"),
        }
    return out


def csv_rows(variants: Sequence[PRMVariant], gains: Sequence[dict]) -> list[dict]:
    """One row per policy, variant, strategy, budget (and Tb for the sweep)."""
    by_name = {v.name: v for v in variants}
    rows = []
    for g in gains:
        v = by_name[g["variant"]]
        row = {
            "kind": v.kind,
            "labels": v.labels,
            "seed": v.seed,
            "requested_auc": v.requested_auc,
            "auc_exact": v.auc("auc_exact"),
            "auc_rollout": v.auc("auc_rollout"),
            **g,
        }
        rows.append({c: row.get(c) for c in CSV_COLUMNS})
    return rows


def check_inputs(
    base: dict[str, list[QuestionScore]],
    params: dict[str, int],
    variants: Sequence[PRMVariant],
    search_ids: set[str],
    accounting: str,
) -> None:
    if accounting not in ("paper", "full"):
        raise ValueError(f"accounting {accounting!r} is unknown; give 'paper' or 'full'")
    if not params or set(params) - set(base):
        raise ValueError(
            f"policies {sorted(params)} need the base evaluation's scores of each, got "
            f"{sorted(base)}: give both for the same policies"
        )
    if not search_ids:
        raise ValueError("no searched questions: give the ids REBASE ran on")
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names {names} repeat one; name each variant once")
    for v in variants:
        unknown = (set(v.scores) | set(v.balance)) - set(params)
        if unknown:
            raise ValueError(
                f"variant {v.name} has scores of {sorted(unknown)}, not among the policies "
                f"{sorted(params)}: give the sizes of every policy it ran"
            )


def prm_quality_summary(
    base: dict[str, list[QuestionScore]],
    params: dict[str, int],
    variants: list[PRMVariant],
    search_ids: set[str],
    accounting: str = "paper",
) -> dict:
    """The study's findings, JSON-able: `gains` (every strategy and budget against
    majority vote at matched FLOPs), `pareto`, `weighted_vs_majority` and `headline` (each with
    its `comparisons` and the AUC `threshold` at which it first holds, against both label
    kinds), `balance` (the Tb sweep), `seeds` (the learned PRM's spread per label kind; a
    difference is called only when every seed agrees on its sign and its mean exceeds both the
    seeds' standard deviation and one standard error) and `rows` (the CSV's).

    Raises ValueError with the problem and its fix when the inputs do not fit together."""
    check_inputs(base, params, variants, search_ids, accounting)
    small = min(params, key=params.__getitem__)
    large = max(params, key=params.__getitem__)
    results: dict[str, dict] = {}
    all_gains, balance_gains = [], []
    for v in variants:
        gains = variant_gains(v, base, search_ids, accounting)
        sweep = balance(v, search_ids)
        for b in sweep:
            majority = by_budget(base[b["policy"]], "majority_vote", search_ids)
            for tb, rows in sorted(v.balance[b["policy"]].items()):
                mine = {s.id: s for s in rows if s.id in search_ids}
                g = gain_over_majority(mine, majority, accounting)
                balance_gains.append(
                    {
                        "policy": b["policy"],
                        "variant": v.name,
                        "strategy": "rebase",
                        "budget": b["width"],
                        "tb": tb,
                        **g,
                    }
                )
        results[v.name] = {
            "gains": gains,
            "pareto": pareto(v, base, search_ids, accounting),
            "weighted_vs_majority": weighted_against_majority(v, base),
            "headline": headline(v, base, small, large, search_ids, accounting),
            "balance": sweep,
        }
        all_gains += gains
    policies = list(params)
    return {
        "accounting": accounting,
        "params": dict(params),
        "small": small,
        "large": large,
        "search_questions": len(search_ids),
        "variants": [v.describe() for v in variants],
        "gains": all_gains,
        "pareto": {
            "variants": [results[v.name]["pareto"] for v in variants],
            "threshold": thresholds(
                variants, {v.name: results[v.name]["pareto"]["on_front"] for v in variants}
            ),
        },
        "weighted_vs_majority": {
            "comparisons": [c for v in variants for c in results[v.name]["weighted_vs_majority"]],
            "threshold": {
                p: thresholds(
                    variants,
                    {
                        v.name: c["beats"]
                        for v in variants
                        for c in results[v.name]["weighted_vs_majority"]
                        if c["policy"] == p
                    },
                )
                for p in policies
            },
        },
        "headline": {
            "comparisons": [c for v in variants for c in results[v.name]["headline"]],
            "threshold": thresholds(
                variants,
                {v.name: any(c["holds"] for c in results[v.name]["headline"]) for v in variants},
            ),
        },
        "balance": [b for v in variants for b in results[v.name]["balance"]],
        "seeds": seed_spreads(variants, results),
        "rows": csv_rows(variants, all_gains + balance_gains),
    }
