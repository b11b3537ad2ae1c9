"""The HTML report opened in a real headless browser (Debian's chromium through Selenium), and
the analysis run's W&B files read back: curves against FLOPs, tables, figures, Report spec.

In CI a missing browser fails the browser test (`make test` installs chromium); elsewhere it is
skipped with the reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import replace

import pytest
from synthetic_evaluation import two_policies, without_prm

from inferscale.analysis.experiment import AnalysisSettings, analyze
from inferscale.report.figures import write_figures
from inferscale.report.files import REPORT_SPEC_FILE
from inferscale.report.html import ReportInputs, write_report
from inferscale.tracking.analysis_run import log_analysis
from inferscale.tracking.offline import find_runs, read_run
from inferscale.tracking.wandb_runs import TrackingSettings, finish_run, start_run

SETTINGS = AnalysisSettings(bootstrap=30, easy_levels=(1, 2))


@pytest.fixture(scope="module")
def analysis():
    return analyze(two_policies(), SETTINGS)


@pytest.fixture(scope="module")
def report(analysis, tmp_path_factory):
    directory = tmp_path_factory.mktemp("report")
    figures = write_figures(analysis, directory)
    path = write_report(
        directory / "report.html",
        ReportInputs(
            experiment="synthetic",
            analysis=analysis,
            figures=figures,
            prm={
                "step_auc": 0.8,
                "bon_last_accuracy": 0.3,
                "label_agreement": {"steps": 40, "rate": 0.875},
            },
            stage_seconds=[("sft", "S-abc", 12.0), ("evaluate", "S-def", None)],
            config_yaml="name: synthetic\n",
        ),
    )
    return path, figures


def test_report_holds_every_section_and_embeds_every_figure(report):
    path, figures = report
    page = path.read_text()
    for anchor in ("optimal", "strategies", "coverage", "limits", "difficulty", "prm", "timings"):
        assert f'id="{anchor}"' in page
    # A metric that is a mapping (the labels' agreement) is read out field by field.
    assert "label_agreement.rate</td><td>0.875</td>" in page
    # Self-contained: every image is inline, nothing is fetched.
    sources = re.findall(r'<img src="([^"]{0,30})', page)
    assert len(sources) == len(figures) and all(s.startswith("data:image/png") for s in sources)
    assert "http://" not in page and "https://" not in page
    assert set(figures) >= {
        "error_vs_flops",
        "error_vs_flops_all_questions",
        "frontier",
        "frontier_full",
        "coverage",
        "coverage_vs_flops",
        "voting_limits",
        "coverage_by_level",
        "easy_and_hard",
    }
    assert "Levi, maximum likelihood" in page and "runner-up" in page


def chrome():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if binary is None or driver is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: CI must run the browser test (make test installs it)")
        pytest.skip("chromium and chromedriver are not installed (make browser)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--window-size=1280,1000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


def test_report_opens_in_a_headless_browser_with_every_image_loaded(report, tmp_path):
    path, figures = report
    browser = chrome()
    try:
        browser.get(path.as_uri())
        images = browser.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth]);"
        )
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        title = browser.title
        tables = browser.execute_script("return document.querySelectorAll('table').length;")
    finally:
        browser.quit()
    assert title == "inferscale report: synthetic"
    assert len(images) == len(figures)
    assert all(complete and width > 0 for _, complete, width in images), images
    assert errors == []
    assert tables >= 6


def test_analysis_run_logs_curves_against_flops_tables_figures_and_the_report(
    analysis, report, tmp_path
):
    _, figures = report
    tracking = TrackingSettings(project="inferscale", group="synthetic", mode="offline")
    run = start_run(tracking, "analyze", "analyze", {}, tmp_path)
    spec_path = log_analysis(run, analysis, figures, tracking, tmp_path)
    finish_run(run)
    (run_dir,) = find_runs(tmp_path / "wandb")
    offline = read_run(run_dir)
    curves = [k for k in offline.step_metrics if k.endswith("/error_rate")]
    assert {"S/rebase/error_rate", "L/majority_vote/error_rate"} <= set(curves)
    assert all(offline.step_metrics[k] == "flops_paper" for k in curves)
    rebase = [row for row in offline.history if "S/rebase/error_rate" in row]
    assert len(rebase) == 2 and all(row["flops_paper"] > 0 for row in rebase)
    logged = {key for row in offline.history for key in row}
    for table in (
        "points",
        "pass_at_k",
        "law_fits",
        "law_forecasts",
        "voting_limits",
        "compute_optimal",
    ):
        assert table in logged, table
    assert {f"figures/{name}" for name in figures} <= logged
    assert REPORT_SPEC_FILE in offline.files
    spec = json.loads((run_dir / "files" / REPORT_SPEC_FILE).read_text())
    assert spec == json.loads(spec_path.read_text())
    assert spec["displayName"] == "inferscale: synthetic"
    text = json.dumps(spec)
    assert "S/rebase/error_rate" in text and "flops_paper" in text
    assert '"tableName": "pass_at_k"' in text or "pass_at_k" in text


def test_an_experiment_without_a_prm_or_tree_search_gets_its_report(tmp_path):
    evaluations = {name: without_prm(e) for name, e in two_policies().items()}
    small = analyze(evaluations, AnalysisSettings(bootstrap=10))
    assert [lim.limits.keys() for lim in small.limits] == [{"majority_vote"}] * 2
    assert {c.strategy for c in small.optimal["paper"].options} == {"greedy", "majority_vote"}
    figures = write_figures(small, tmp_path)
    assert "error_vs_flops_all_questions" not in figures  # every strategy ran every question
    page = write_report(tmp_path / "report.html", ReportInputs("plain", small, figures)).read_text()
    assert 'id="coverage"' in page and 'id="prm"' not in page


def test_a_disabled_tracking_run_still_writes_the_report_spec(analysis, report, tmp_path):
    _, figures = report
    tracking = TrackingSettings(project="inferscale", group="synthetic", mode="disabled")
    run = start_run(tracking, "analyze", "analyze", {}, tmp_path)
    spec = log_analysis(run, analysis, figures, tracking, tmp_path)
    finish_run(run)
    assert json.loads(spec.read_text())["displayName"] == "inferscale: synthetic"
    assert not (tmp_path / "wandb").exists() or not find_runs(tmp_path / "wandb")


def test_an_online_experiment_whose_run_went_offline_saves_its_report_spec_offline(
    analysis, report, tmp_path, monkeypatch
):
    import wandb_workspaces.reports.v2 as wr

    saved = []
    monkeypatch.setattr(wr.Report, "save", lambda self, *args, **kwargs: saved.append(self))
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing answers there
    _, figures = report
    online = TrackingSettings(project="inferscale", group="synthetic", mode="online")
    # The run a stage gets when W&B cannot start it online.
    run = start_run(replace(online, mode="offline"), "analyze", "analyze", {}, tmp_path)
    spec = log_analysis(run, analysis, figures, online, tmp_path)
    finish_run(run)
    assert saved == []
    text = spec.read_text()
    assert json.loads(text)["displayName"] == "inferscale: synthetic"
    assert '"project":"inferscale"' not in text.replace(" ", "")
    (run_dir,) = find_runs(tmp_path / "wandb")
    assert REPORT_SPEC_FILE in read_run(run_dir).files
