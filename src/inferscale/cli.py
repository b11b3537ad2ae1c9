"""`inferscale run | validate | status | summary | report | plan | gc | serve | deploy |
prm-quality`: the command-line entry point."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

from inferscale.config import ConfigError, ExperimentConfig, check_run_inputs, load_config
from inferscale.overrides import config_source
from inferscale.progress import quiet_library_bars
from inferscale.report.files import REPORT_FILE, SUMMARY_FILE
from inferscale.report.summary import format_summary
from inferscale.stages import STAGES, plan

DEFAULT_CONFIG = "configs/default.yaml"


def _load(path: str, run_inputs: bool = False, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """The experiment at `path` with its `--set` overrides; with `run_inputs`, also what a run
    reads and writes (dataset files, the output folder). A bad input ends the command with its
    one-line reason, code 2."""
    try:
        config = load_config(path, overrides)
        if run_inputs:
            check_run_inputs(config, config_source(path, overrides))
        return config
    except ConfigError as err:
        print(err, file=sys.stderr)
        raise SystemExit(2) from None


def _check_tracking(path: str, config: ExperimentConfig) -> None:
    """Online tracking needs a W&B key: refuse before any work, not at the first stage."""
    from inferscale.tracking.connection import TrackingError, check_credentials

    try:
        check_credentials(config.tracking.mode)
    except TrackingError as err:
        print(f"{path}: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_run(args: argparse.Namespace) -> int:
    config = _load(args.config, run_inputs=True, overrides=args.overrides)
    source = config_source(args.config, args.overrides)
    if args.dry_run:
        return _dry_run(config, args.refresh)
    _check_tracking(source, config)
    _refuse_unrunnable_only(args, config, source)
    from inferscale.flows.parameters import flow_parameters
    from inferscale.flows.pipeline import StagesFailed, experiment_flow
    from inferscale.reaper import start_for

    start_for(os.getpid())

    start = time.perf_counter()
    try:
        parameters = flow_parameters(config, source, args.refresh, args.only, args.policy)
        result = experiment_flow(**parameters)
    except StagesFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # the flow's log above has the traceback
        if _stopped_by:  # Prefect's own error while it reported the stop
            return 1
        print(f"error: the run stopped: {type(err).__name__}: {err}", file=sys.stderr)
        print("finished stages are kept; fix the cause and run again", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - start
    if args.only:
        return _print_only(result, elapsed)
    report_dir = Path(result)
    summary = json.loads((report_dir / SUMMARY_FILE).read_text())
    print(format_summary(summary, report_dir))
    print(f"wall time: {elapsed:.0f} s; W&B runs: {plan(config).root / 'wandb'}")
    return 0


def cmd_prm_quality(args: argparse.Namespace) -> int:
    from inferscale.prm_quality_config import load_study
    from inferscale.prm_quality_plan import study_plan, unfinished

    try:
        study, config = load_study(args.study)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    missing = unfinished(study_plan(study, config))
    if missing:
        print(
            f"{args.study}: the experiment {config.name} has not finished "
            f"{', '.join(missing)}; run it first (inferscale run {study.experiment}, relative "
            "to the study file) and then the study",
            file=sys.stderr,
        )
        return 2
    _check_tracking(args.study, config)
    from inferscale.flows.prm_quality import prm_quality_flow
    from inferscale.reaper import start_for

    start_for(os.getpid())
    start = time.perf_counter()
    try:
        result = prm_quality_flow(study_path=args.study)
    except Exception as err:  # the flow's log above has the traceback
        if _stopped_by:
            return 1
        print(f"error: the study stopped: {type(err).__name__}: {err}", file=sys.stderr)
        print("finished stages are kept; fix the cause and run again", file=sys.stderr)
        return 1
    import html
    import re

    from inferscale.report.prm_quality import PAGE_FILE, SUMMARY_FILE, reading

    report_dir = Path(result)
    summary = json.loads((report_dir / SUMMARY_FILE).read_text())
    print(html.unescape(re.sub(r"<[^>]+>", "", reading(summary))).strip())
    print(f"report: {report_dir / PAGE_FILE}")
    print(f"wall time: {time.perf_counter() - start:.0f} s")
    return 0


def _refuse_unrunnable_only(
    args: argparse.Namespace, config: ExperimentConfig, source: str
) -> None:
    """`--only` whose stage or inputs are not there ends the command, code 2, before any work."""
    if args.only is None and args.policy is None:
        return
    from inferscale.single_stage import selection_problem

    problem = selection_problem(config, plan(config), args.only, args.policy, args.refresh, source)
    if problem:
        print(problem, file=sys.stderr)
        raise SystemExit(2)


def _print_only(artifacts: dict[str, str], elapsed: float) -> int:
    for name, path in artifacts.items():
        print(f"{name}: {path}")
    print(f"wall time: {elapsed:.0f} s")
    return 0


def _deployment(args: argparse.Namespace) -> tuple[ExperimentConfig, dict]:
    """The experiment and its flow parameters, once the config, the schedule and the Prefect
    API are fine; otherwise the one-line reason, code 2."""
    from inferscale.flows.deployments import PrefectUnavailable, check_cron, check_prefect_api
    from inferscale.flows.parameters import flow_parameters

    config = _load(args.config, run_inputs=True, overrides=args.overrides)
    try:
        check_cron(args.cron)
        check_prefect_api()
    except (ValueError, PrefectUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    return config, flow_parameters(config, config_source(args.config, args.overrides))


def cmd_serve(args: argparse.Namespace) -> int:
    from inferscale.flows.deployments import serve_experiment

    config, parameters = _deployment(args)
    _check_tracking(parameters["config_path"], config)
    serve_experiment(parameters, args.name or config.name, args.cron)
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from inferscale.flows.deployments import PrefectUnavailable, check_work_pool, deploy_experiment

    config, parameters = _deployment(args)
    try:
        pool_type = check_work_pool(args.pool)
    except PrefectUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.image and pool_type == "process":
        print(
            f"error: --image: work pool {args.pool!r} runs flows as local processes, not in "
            "images; drop --image, or deploy to a docker or kubernetes pool",
            file=sys.stderr,
        )
        return 2
    name = deploy_experiment(parameters, args.name or config.name, args.pool, args.cron, args.image)
    print(
        f"deployed {args.config} as {name} on work pool {args.pool!r}; a worker runs it: "
        f"prefect worker start --pool {args.pool}"
    )
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    config = _load(args.config, run_inputs=True, overrides=args.overrides)
    source = config_source(args.config, args.overrides)
    _check_tracking(source, config)
    print(
        f"{source}: valid ({len(config.policies)} policies, "
        f"strategies {config.evaluation.strategies}, budgets {config.evaluation.budgets})"
    )
    return 0


def _dry_run(config: ExperimentConfig, refresh: list[str]) -> int:
    from inferscale.plan_status import plan_lines
    from inferscale.stages import stages_to_refresh

    print(f"plan of {config.name} (nothing is run):")
    print("\n".join(plan_lines(config, plan(config), stages_to_refresh(refresh))))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from inferscale.plan_status import evaluation_progress, is_partial_evaluation, state_of, why_run

    config = _load(args.config, overrides=args.overrides)
    p = plan(config)
    for artifact in p.all():
        state, damage = state_of(artifact)
        print(f"{state:>8}  {artifact.stage:<13} {artifact.path}")
        if damage:
            notes = [f"{'; '.join(damage)}: the next run computes it again"]
        else:
            notes = why_run(artifact)
        if is_partial_evaluation(artifact):
            notes.append(f"progress: {evaluation_progress(config, p, artifact)}")
        for note in notes:
            print(f"{'':>8}  {'':<13} {note}")
    return 0


def _finished_analysis(config_path: str, overrides: Sequence[str]):
    report = plan(_load(config_path, overrides=overrides)).analyze
    config_path = config_source(config_path, overrides)
    if not report.complete:
        print(
            f"error: no finished analysis at {report.path}; run `inferscale run {config_path}`",
            file=sys.stderr,
        )
        raise SystemExit(1)
    damage = report.damage()
    if damage:
        print(
            f"error: the analysis at {report.path} is damaged ({'; '.join(damage)}); "
            f"run `inferscale run {config_path}` to compute it again",
            file=sys.stderr,
        )
        raise SystemExit(1)
    return report


def cmd_summary(args: argparse.Namespace) -> int:
    report = _finished_analysis(args.config, args.overrides)
    print(format_summary(json.loads((report.path / SUMMARY_FILE).read_text()), report.path))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    path = (_finished_analysis(args.config, args.overrides).path / REPORT_FILE).resolve()
    print(path)
    if args.open:
        import webbrowser

        if not webbrowser.open(path.as_uri()):
            print("error: no browser to open it with on this machine", file=sys.stderr)
            return 1
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from inferscale.analysis.evaluations import load_evaluations
    from inferscale.analysis.experiment import AnalysisSettings, points_of
    from inferscale.analysis.optimal import plan as best_choices
    from inferscale.analysis.points import ALL_LEVELS, level_groups
    from inferscale.scaling.frontier import BudgetError, beyond_noise, margin
    from inferscale.search.registry import STRATEGIES

    config = _load(args.config, overrides=args.overrides)
    stages = plan(config)
    try:
        evaluations = load_evaluations(
            {name: a.path for name, a in stages.evaluate.items() if a.complete},
            list(stages.evaluate),
            config.evaluation.pool_size,
            config.evaluation.aggregation,
        )
    except ValueError as err:
        source = config_source(args.config, args.overrides)
        print(f"error: {err} (`inferscale run {source}`)", file=sys.stderr)
        return 1
    settings = AnalysisSettings.of(config.analysis)
    levels = args.level or ALL_LEVELS
    groups = level_groups(next(iter(evaluations.values())).scores, settings.easy_levels)
    if levels not in groups:
        print(
            f"error: --level {levels!r} is not a difficulty group of this experiment; "
            f"groups: {', '.join(groups)}",
            file=sys.stderr,
        )
        return 2
    try:
        ranked = best_choices(
            points_of(evaluations, settings),
            evaluations,
            args.flops,
            args.accounting,
            levels,
            settings.easy_levels,
            top=args.top,
        )
    except BudgetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    best = ranked[0]
    print(
        f"within {args.flops:.3g} FLOPs per question ({args.accounting} accounting, levels "
        f"{levels}, {best.questions} questions every strategy ran):"
    )
    for i, c in enumerate(ranked):
        line = (
            f"  {'best' if i == 0 else f'#{i + 1}':>4}  {c.policy} "
            f"{STRATEGIES[c.strategy].budget_label(c.budget)}: error {c.error:.3f} ± "
            f"{c.stderr:.3f} at {c.flops:.3g} FLOPs"
        )
        if i:
            m = margin(best, c)
            noise = "clear" if beyond_noise(m.difference, m.stderr) else "within noise"
            line += f"; {m.difference:+.3f} ± {m.stderr:.3f} against the best ({noise})"
        print(line)
    return 0


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def _directories(n: int) -> str:
    return f"{n} {'directory' if n == 1 else 'directories'}"


def cmd_gc(args: argparse.Namespace) -> int:
    from inferscale.stages import run_root
    from inferscale.stale_artifacts import sweep

    config = _load(args.config, overrides=args.overrides)
    source = config_source(args.config, args.overrides)
    keep = [(other, _load(other)) for other in args.keep]
    artifacts = run_root(config) / "artifacts"
    current = {a.path for a in plan(config).all()}
    for other, other_config in keep:
        other_artifacts = run_root(other_config) / "artifacts"
        if other_artifacts.resolve() != artifacts.resolve():
            print(f"note: {other} keeps its artifacts in {other_artifacts}, not here")
        current |= {a.path for a in plan(other_config).all()}
    if not artifacts.is_dir():
        print(f"nothing to collect: {artifacts} does not exist")
        return 0
    result = sweep(artifacts, current, delete=args.yes)
    kept_bytes = sum(d.bytes for d in result.kept)
    print(f"kept {_directories(len(result.kept))} of current keys ({_size(kept_bytes)})")
    for directory, holder in result.busy:
        print(f"kept, a run is computing it: {directory.path} ({holder})")
    stale_bytes = sum(d.bytes for d in result.stale)
    if not result.stale:
        print("nothing stale")
        return 0
    print(
        f"{'deleted' if args.yes else 'stale'}: {_directories(len(result.stale))} no current "
        f"key of {source} points to:"
    )
    for d in result.stale:
        print(f"  {_size(d.bytes):>10}  {'finished' if d.finished else 'unfinished':<10}  {d.path}")
    if args.yes:
        print(f"freed {_size(stale_bytes)}")
    else:
        command = " ".join(
            ["inferscale gc", source, *(f"--keep {shlex.quote(k)}" for k in args.keep), "--yes"]
        )
        print(f"would free {_size(stale_bytes)}: run `{command}` to delete them")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inferscale", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run or resume an experiment end to end")
    _add_config_arguments(run)
    _add_only_arguments(run)
    run.add_argument(
        "--refresh",
        action="append",
        default=[],
        choices=STAGES,
        metavar="STAGE",
        help=f"recompute STAGE and everything after it (one of {', '.join(STAGES)}); repeatable",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print each stage's plan (cached, or run and why) and run nothing",
    )
    run.set_defaults(func=cmd_run)
    commands = {}
    for name, func, text in (
        ("validate", cmd_validate, "check an experiment config and exit"),
        ("status", cmd_status, "show which stages of an experiment are finished"),
        ("summary", cmd_summary, "print the summary of a finished experiment"),
        ("report", cmd_report, "print the path of a finished experiment's HTML report"),
        (
            "plan",
            cmd_plan,
            "the compute-optimal choice for a FLOPs budget, from the measured curves",
        ),
        ("gc", cmd_gc, "list (and with --yes delete) artifacts no current key points to"),
    ):
        p = sub.add_parser(name, help=text)
        _add_config_arguments(p)
        p.set_defaults(func=func)
        commands[name] = p
    commands["report"].add_argument("--open", action="store_true", help="open it in a browser")
    _add_deployment_commands(sub)
    study = sub.add_parser(
        "prm-quality",
        help="how the strategies' gains depend on the PRM's quality, on a finished experiment",
    )
    study.add_argument("study", nargs="?", default="configs/prm_quality.yaml", help="study file")
    study.set_defaults(func=cmd_prm_quality)
    planner = commands["plan"]
    planner.add_argument(
        "--flops", type=float, required=True, help="inference FLOPs per question to spend"
    )
    planner.add_argument("--accounting", choices=("paper", "full"), default="paper")
    planner.add_argument(
        "--level", help="a difficulty group: a level (e.g. 3), easy or hard (default: all)"
    )
    planner.add_argument("--top", type=int, default=3, help="how many choices to list")
    _add_gc_arguments(commands["gc"])
    return parser


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", default=DEFAULT_CONFIG)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override one setting of the config, the value in YAML (e.g. "
        "evaluation.budgets=[1,2,4], policies.0.num_layers=4); repeatable",
    )


def _add_only_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--only",
        choices=STAGES,
        metavar="STAGE",
        help="run STAGE alone, from finished inputs, and nothing after it",
    )
    parser.add_argument(
        "--policy", metavar="NAME", help="with --only sft or evaluate: that policy alone"
    )


def _add_gc_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keep",
        action="append",
        default=[],
        metavar="OTHER_CONFIG",
        help="keep the artifacts of this config too (one that shares the output folder); "
        "repeatable",
    )
    parser.add_argument("--yes", action="store_true", help="delete what is listed")


def _add_deployment_commands(sub) -> None:
    serve = sub.add_parser(
        "serve", help="serve the experiment on a schedule from this process (Prefect server)"
    )
    serve.set_defaults(func=cmd_serve)
    deploy = sub.add_parser("deploy", help="deploy the experiment to a Prefect work pool")
    deploy.set_defaults(func=cmd_deploy)
    deploy.add_argument("--pool", required=True, help="the work pool whose workers run it")
    deploy.add_argument(
        "--image", help="an image with inferscale installed, for a docker or kubernetes pool"
    )
    for p in (serve, deploy):
        _add_config_arguments(p)
        p.add_argument("--cron", help='when to run it, e.g. "0 3 * * *" (default: on demand)')
        p.add_argument("--name", help="the deployment's name (default: the experiment's)")


# Slurm and Kubernetes kill a job 30 s after its SIGTERM; when the signal went to the whole
# process group, Prefect's own temporary server is gone too, and Prefect would wait on it for
# minutes while reporting the flow's end.
SIGTERM_EXIT_DEADLINE_S = 15.0
_stopped_by: list[int] = []


def _exit_after(deadline_s: float, code: int) -> None:
    time.sleep(deadline_s)
    print(
        f"exiting without Prefect's final report ({deadline_s:.0f} s after SIGTERM)",
        file=sys.stderr,
        flush=True,
    )
    for child in psutil.Process().children(recursive=True):
        try:
            child.kill()
        except psutil.NoSuchProcess:
            continue
    os._exit(code)


def _exit_on_sigterm(signum: int, frame) -> None:
    if not _stopped_by:
        _stopped_by.append(signum)
        print(
            "stopped by SIGTERM; finished stages are kept: run the same command to resume",
            file=sys.stderr,
            flush=True,
        )
        threading.Thread(
            target=_exit_after, args=(SIGTERM_EXIT_DEADLINE_S, 128 + signum), daemon=True
        ).start()
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
    quiet_library_bars()
    args = build_parser().parse_args(argv)
    code = args.func(args)
    # Prefect may turn the stop into an error of its own while it shuts down.
    return 128 + _stopped_by[0] if _stopped_by else code


if __name__ == "__main__":
    raise SystemExit(main())
