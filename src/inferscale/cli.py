"""`inferscale run | validate | status | summary`: the command-line entry point."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from inferscale.config import ConfigError, ExperimentConfig, load_config
from inferscale.stages import STAGES, plan

DEFAULT_CONFIG = "configs/default.yaml"


def format_summary(summary: dict, report_dir: Path) -> str:
    lines = [f"experiment {summary['experiment']}"]
    policies = summary["policies"]
    for name, row in policies.items():
        cells = [f"{name:>10} {row['params'] / 1e6:7.2f}M params"]
        cells += [f"{key} {value:.3f}" for key, value in row.items() if key != "params"]
        lines.append("  ".join(cells))
    by_size = sorted(policies.items(), key=lambda kv: kv[1]["params"])
    if len(by_size) >= 2 and all("greedy_error" in r for _, r in by_size):
        small, large = by_size[0], by_size[-1]
        verdict = "lower" if large[1]["greedy_error"] < small[1]["greedy_error"] else "NOT lower"
        lines.append(
            f"larger policy {large[0]} greedy error {large[1]['greedy_error']:.3f} is {verdict} "
            f"than {small[0]}'s {small[1]['greedy_error']:.3f}"
        )
    for name, row in policies.items():
        majority = next((k for k in row if k.startswith("majority_vote@")), None)
        weighted = next((k for k in row if k.startswith("weighted_vote@")), None)
        if majority and "greedy_error" in row:
            better = "beats" if row[majority] < row["greedy_error"] else "does NOT beat"
            lines.append(
                f"{name}: {majority.removesuffix('_error')} error {row[majority]:.3f} {better} "
                f"greedy {row['greedy_error']:.3f}"
            )
        if majority and weighted:
            verdict = "at least as accurate as" if row[weighted] <= row[majority] else "WORSE than"
            lines.append(
                f"{name}: {weighted.removesuffix('_error')} error {row[weighted]:.3f} is "
                f"{verdict} {majority.removesuffix('_error')} {row[majority]:.3f}"
            )
    prm = summary.get("prm")
    if prm:
        lines.append(
            "PRM on held-out labelled steps: step AUC "
            + (f"{prm['step_auc']:.3f}" if prm.get("step_auc") is not None else "n/a")
            + "; best-of-n picks a right solution "
            + ", ".join(
                f"{k.removeprefix('bon_').removesuffix('_accuracy')} {prm[k]:.3f}"
                for k in ("bon_last_accuracy", "bon_min_accuracy", "bon_random_accuracy")
                if prm.get(k) is not None
            )
        )
    compared = summary.get("compared", {})
    for name, row in compared.items():
        if row["questions"] < row["of"]:  # the pools ran on more: their errors above differ
            lines.append(
                f"{name} on the {row['questions']} questions every strategy ran: "
                + "  ".join(f"{k} {v:.3f}" for k, v in row.items() if k not in ("questions", "of"))
            )
    for name, shares in summary.get("pareto", {}).items():
        tree = {k: v for k, v in shares.items() if k in ("rebase", "mcts", "beam_search")}
        if tree:
            on = (
                f" (on the {compared[name]['questions']} questions every strategy ran)"
                if name in compared
                else ""
            )
            lines.append(
                f"{name}: share of budgets on the error-vs-FLOPs Pareto front{on}: "
                + "  ".join(f"{k} {v:.2f}" for k, v in tree.items())
            )
    lines.append("greedy accuracy by level:")
    for name, levels in summary["greedy_accuracy_by_level"].items():
        if levels:
            lines.append(f"  {name}: " + "  ".join(f"L{k} {v:.2f}" for k, v in levels.items()))
    lines.append(f"plot:  {report_dir / 'error_vs_flops.png'}")
    lines.append(f"table: {report_dir / 'points.csv'}")
    return "\n".join(lines)


def _load(path: str) -> ExperimentConfig:
    try:
        return load_config(path)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    from inferscale.flows.pipeline import StagesFailed, experiment_flow

    start = time.perf_counter()
    try:
        report_dir = Path(experiment_flow(args.config, refresh=args.refresh))
    except StagesFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # the flow's log above has the traceback
        print(f"error: the run stopped: {type(err).__name__}: {err}", file=sys.stderr)
        print("finished stages are kept; fix the cause and run again", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - start
    summary = json.loads((report_dir / "summary.json").read_text())
    print(format_summary(summary, report_dir))
    print(f"wall time: {elapsed:.0f} s; W&B runs: {plan(config).root / 'wandb'}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    config = _load(args.config)
    print(
        f"{args.config}: valid ({len(config.policies)} policies, "
        f"strategies {config.evaluation.strategies}, budgets {config.evaluation.budgets})"
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    p = plan(_load(args.config))
    for artifact in p.all():
        state = "done" if artifact.complete else ("partial" if artifact.path.exists() else "-")
        print(f"{state:>8}  {artifact.stage:<13} {artifact.path}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    report = plan(_load(args.config)).analyze
    if not report.complete:
        print(
            f"no finished analysis at {report.path}; run `inferscale run {args.config}`",
            file=sys.stderr,
        )
        return 1
    print(format_summary(json.loads((report.path / "summary.json").read_text()), report.path))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inferscale", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run or resume an experiment end to end")
    run.add_argument("config", nargs="?", default=DEFAULT_CONFIG)
    run.add_argument(
        "--refresh",
        action="append",
        default=[],
        choices=STAGES,
        metavar="STAGE",
        help=f"recompute STAGE and everything after it (one of {', '.join(STAGES)}); repeatable",
    )
    run.set_defaults(func=cmd_run)
    for name, func, text in (
        ("validate", cmd_validate, "check an experiment config and exit"),
        ("status", cmd_status, "show which stages of an experiment are finished"),
        ("summary", cmd_summary, "print the summary of a finished experiment"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("config", nargs="?", default=DEFAULT_CONFIG)
        p.set_defaults(func=func)
    return parser


def _exit_on_sigterm(signum: int, frame) -> None:
    print(
        "stopped by SIGTERM; finished stages are kept: run the same command to resume",
        file=sys.stderr,
    )
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    # A scheduler's SIGTERM would end the process on the spot, leaving Prefect's temporary
    # server (and any training it launched) running with no one to stop them: exit instead,
    # which runs the clean-up.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    # The temporary Prefect server's telemetry service only tries to reach the network and
    # races the server's own start-up writes to its database.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The temporary server's 20 s default is too short on a loaded 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
