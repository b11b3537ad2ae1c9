"""The files of the analysis artifact."""

TABLE_FILE = "points.csv"  # every point of every policy, question set and difficulty group
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"
REPORT_SPEC_FILE = "wandb_report.json"  # the W&B Report's spec


def figure_file(name: str) -> str:
    return f"{name}.png"


def table_file(name: str) -> str:
    return f"{name}.csv"
