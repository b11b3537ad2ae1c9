"""The W&B Report of an experiment's analysis run: its curves with FLOPs on the x-axis, its
tables and its figures. Built with wandb-workspaces; saved to W&B when online, and as its spec
(the JSON W&B stores) beside the run when offline, since building ids needs the server."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

with warnings.catch_warnings():
    # wandb-workspaces 0.4 still declares pydantic v1-style validators.
    warnings.filterwarnings("ignore", message="Pydantic V1 style", category=DeprecationWarning)
    import wandb_workspaces.reports.v2 as wr

FLOPS_AXIS = "flops_paper"  # every curve's x-axis in the analysis run


def error_key(policy: str, strategy: str) -> str:
    return f"{policy}/{strategy}/error_rate"


def build_report(
    experiment: str,
    project: str,
    entity: str | None,
    curves: Sequence[tuple[str, str]],
    tables: Sequence[str],
    figures: Sequence[str],
) -> wr.Report:
    """Panels over the experiment's analysis run: one line plot of error rate against FLOPs
    per policy (a line per strategy), every table and every figure it logged. Offline, pass
    empty `project` and `entity`: the spec then serialises without asking a server for ids; an
    entity of None is the logged-in user's."""
    owner = {"project": project} if entity is None else {"project": project, "entity": entity}
    runset = wr.Runset(
        **owner,
        name=f"{experiment} analysis",
        filters=f"JobType = 'analyze' and Group = '{experiment}'",
    )
    policies = list(dict.fromkeys(policy for policy, _ in curves))
    line_plots = [
        wr.LinePlot(
            title=f"{policy}: error rate against inference FLOPs per question",
            x=FLOPS_AXIS,
            y=[error_key(p, s) for p, s in curves if p == policy],
            log_x=True,
            title_x="inference FLOPs per question (paper accounting)",
            title_y="error rate",
        )
        for policy in policies
    ]
    return wr.Report(
        **owner,
        title=f"inferscale: {experiment}",
        description="Inference scaling: error against FLOPs, coverage laws, voting limits and "
        "the compute-optimal choice across model sizes.",
        blocks=[
            wr.H1(f"Inference scaling: {experiment}"),
            wr.P("Error rate against inference FLOPs, a panel per policy."),
            wr.PanelGrid(runsets=[runset], panels=line_plots),
            wr.H2("Tables"),
            wr.PanelGrid(
                runsets=[runset],
                panels=[wr.WeavePanelSummaryTable(table_name=name) for name in tables],
            ),
            wr.H2("Figures"),
            wr.PanelGrid(runsets=[runset], panels=[wr.MediaBrowser(media_keys=list(figures))]),
        ],
    )


def report_spec(report: wr.Report) -> str:
    return report._to_model().model_dump_json(by_alias=True, exclude_none=True)


def save_spec(report: wr.Report, path: Path) -> Path:
    path.write_text(report_spec(report))
    return path
