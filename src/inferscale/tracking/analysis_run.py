"""What the analysis stage logs to its W&B run: every (policy, strategy) curve with FLOPs as
its x-axis, the tables of points, coverage, fits, forecasts, voting limits and the
compute-optimal choice, the figures, and the Report over them."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import wandb

from inferscale.analysis.experiment import ExperimentAnalysis
from inferscale.analysis.points import compared_points, in_group
from inferscale.report.files import REPORT_SPEC_FILE
from inferscale.report.wandb_report import FLOPS_AXIS, build_report, error_key, save_spec
from inferscale.scaling import laws
from inferscale.tracking.wandb_runs import TrackingSettings, log_image, log_table

logger = logging.getLogger(__name__)


def analysis_tables(analysis: ExperimentAnalysis) -> dict[str, pd.DataFrame]:
    coverage_rows, fit_rows, forecast_rows = [], [], []
    for cov in analysis.coverages:
        for group in cov.groups:
            for k, c, s in zip(
                group.curve.ks, group.curve.coverage, group.curve.stderr, strict=True
            ):
                row = {"policy": cov.policy, "levels": group.levels, "k": int(k)}
                coverage_rows.append({**row, "pass_at_k": float(c), "stderr": float(s)})
        for law, fit in cov.fits.items():
            for name, value in laws.law_parameters(fit).items():
                fit_rows.append(
                    {"policy": cov.policy, "law": law, "parameter": name, "value": value}
                )
        for law, f in cov.forecasts.items():
            forecast_rows.append(
                {
                    "policy": cov.policy,
                    "law": law,
                    "fitted_up_to": f.fitted_up_to,
                    "predicted_at_pool": f.predicted[-1],
                    "measured_at_pool": f.measured[-1],
                    "error_at_pool": f.error_at_max,
                    "max_abs_error": f.max_abs_error,
                }
            )
    limit_rows = [
        {"policy": lim.policy, "strategy": strategy, **asdict(limit)}
        for lim in analysis.limits
        for strategy, limit in lim.limits.items()
    ]
    optimal_rows = []
    for accounting, optimal in analysis.optimal.items():
        for row in optimal.summary()["rows"]:
            best, runner = row["best"], row["runner_up"] or {}
            optimal_rows.append(
                {
                    "accounting": accounting,
                    "budget_flops": row["flops"],
                    "policy": best["policy"],
                    "strategy": best["strategy"],
                    "budget": best["budget"],
                    "error": best["error"],
                    "stderr": best["stderr"],
                    "runner_up": f"{runner.get('policy', '')} {runner.get('strategy', '')}",
                    "margin": (row["margin"] or {}).get("difference"),
                    "margin_stderr": (row["margin"] or {}).get("stderr"),
                }
            )
    return {
        "points": analysis.table,
        "pass_at_k": pd.DataFrame(coverage_rows),
        "law_fits": pd.DataFrame(fit_rows),
        "law_forecasts": pd.DataFrame(forecast_rows),
        "voting_limits": pd.DataFrame(limit_rows),
        "compute_optimal": pd.DataFrame(optimal_rows),
    }


def log_analysis(
    run: wandb.Run,
    analysis: ExperimentAnalysis,
    figures: dict[str, Path],
    tracking: TrackingSettings,
    artifact_dir: Path,
) -> Path:
    """Log everything to `run` and build its Report; returns where the Report's spec went.
    Online, the Report is also saved to W&B; a failure to save it is logged, not raised: the
    spec is on disk and `wandb sync` or a later run can publish it."""
    run.define_metric(FLOPS_AXIS)
    curves = []
    compared = compared_points(in_group(analysis.table))
    for (policy, strategy), points in compared.groupby(["policy", "strategy"], sort=False):
        key = error_key(str(policy), str(strategy))
        run.define_metric(key, step_metric=FLOPS_AXIS, summary="min")
        curves.append((str(policy), str(strategy)))
        for row in points.sort_values("budget").itertuples():
            run.log(
                {FLOPS_AXIS: row.flops_paper, "flops_full": row.flops_full, key: row.error_rate}
            )
    tables = analysis_tables(analysis)
    for name, frame in tables.items():
        if not frame.empty:
            log_table(run, name, frame)
    for name, path in figures.items():
        log_image(run, f"figures/{name}", path)
    run.summary.update({"headline": analysis.summary()["policies"]})
    # The run's own mode: a run that could not start online was started offline instead.
    online = tracking.mode == "online" and not (run.offline or run.disabled)
    report = build_report(
        tracking.group,
        tracking.project if online else "",
        tracking.entity if online else "",
        curves,
        [name for name, frame in tables.items() if not frame.empty],
        [f"figures/{name}" for name in figures],
    )
    spec = save_spec(report, artifact_dir / REPORT_SPEC_FILE)
    if not run.disabled:
        # In the run's own files too, so that `wandb sync` uploads it with the run.
        run.save(str(save_spec(report, Path(run.dir) / REPORT_SPEC_FILE)), base_path=run.dir)
    if online:
        try:
            report.save()
        except Exception as err:  # the server, the login or the network
            logger.warning("the W&B Report was not saved (%s); its spec is at %s", err, spec)
    return spec
