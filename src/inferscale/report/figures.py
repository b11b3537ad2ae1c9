"""Every figure of the analysis, written beside the report as PNG files."""

from __future__ import annotations

from pathlib import Path

from inferscale.analysis.experiment import ExperimentAnalysis
from inferscale.analysis.points import compared_points, in_group, widest_points
from inferscale.report import plots
from inferscale.report.files import figure_file


def write_figures(analysis: ExperimentAnalysis, directory: Path) -> dict[str, Path]:
    table = analysis.table
    everything = in_group(table)
    compared = compared_points(everything)
    # Every strategy, on the questions all of them ran.
    figures = {
        "error_vs_flops": plots.plot_error_vs_flops(
            compared, directory / figure_file("error_vs_flops")
        )
    }
    widest = widest_points(everything)
    if not widest.index.equals(compared.index):
        # Tree searches on fewer questions: the strategies that ran on every question get a
        # figure of their own, at the precision of the whole test set.
        name = "error_vs_flops_all_questions"
        figures[name] = plots.plot_error_vs_flops(widest, directory / figure_file(name))
    for accounting, name in (("paper", "frontier"), ("full", "frontier_full")):
        optimal = analysis.optimal[accounting]
        figures[name] = plots.plot_frontier(
            optimal.options, optimal.front, directory / figure_file(name), accounting
        )
    if analysis.coverages:
        pool = int(analysis.coverages[0].curve.ks[-1])
        figures["coverage"] = plots.plot_coverage(
            analysis.coverages,
            directory / figure_file("coverage"),
            extrapolate_to=max(1000, 10 * pool),
        )
        figures["coverage_vs_flops"] = plots.plot_coverage_vs_flops(
            analysis.coverages, directory / figure_file("coverage_vs_flops"), "paper"
        )
        if any(len(c.groups) > 1 for c in analysis.coverages):
            figures["coverage_by_level"] = plots.plot_coverage_by_level(
                analysis.coverages, directory / figure_file("coverage_by_level")
            )
    if analysis.limits:
        figures["voting_limits"] = plots.plot_voting_limits(
            analysis.limits, directory / figure_file("voting_limits")
        )
    easy_and_hard = plots.plot_easy_and_hard(
        table, directory / figure_file("easy_and_hard"), "paper"
    )
    if easy_and_hard is not None:
        figures["easy_and_hard"] = easy_and_hard
    return figures
