"""The native views in a real browser: MLflow's UI served by a real `mlflow server`, and optuna-dashboard.

Headless Chromium opens the pages a user would after a small suite and a small study; the
assertions read the rendered page (screenshots go to the test's temporary folder).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from mlflow import MlflowClient

from bench import tracking
from bench.suites import load_suite, run_suite
from tests.test_server import free_port, server  # noqa: F401  (the real tracking server fixture)

SUITE = """\
[suite]
name = "ui-suite"
dataset = "mnist"
seeds = [0, 1]
baseline = "softmax"

[defaults]
max_train_samples = 300
epochs = 2

[profiles.quick]

[[variants]]
variant = "softmax"

[[variants]]
variant = "lenet"
"""


class Slow:
    """Keeps one run alive long enough for the system-metrics monitor (2 s period) to sample it."""

    def on_epoch_end(self, metrics):
        time.sleep(2.5)


@pytest.fixture(scope="module")
def ui_suite(server, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("ui")
    (root / "ui.toml").write_text(SUITE)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", server)
        outcome = run_suite(
            load_suite(root / "ui.toml"), "quick", log_models=False, progress=False, echo=lambda _: None,
            callbacks_for=lambda row, config: [Slow()] if (row.label, config.seed) == ("lenet", 0) else [],
        )
        children = tracking.child_runs(outcome.parent_run_id)
        experiment_id = tracking.get_run(outcome.parent_run_id).info.experiment_id
    return {"url": server, "experiment": experiment_id, "parent": outcome.parent_run_id, "children": children}


def page_text(driver, url: str, *needles: str, shot, timeout: float = 90) -> str:
    """Open ``url`` and wait until the rendered text holds every needle; fail showing what it held."""
    driver.get(url)
    deadline = time.monotonic() + timeout
    text, seen = "", ""
    while time.monotonic() < deadline:
        text = driver.execute_script("return document.body ? document.body.innerText : ''")
        seen += text  # long tables render only the rows in view: text scrolled past still counts
        if all(n in seen for n in needles):
            driver.save_screenshot(str(shot))
            return seen
        # As a user would: scroll every scrolled pane down, so rows below the fold get rendered.
        driver.execute_script("document.querySelectorAll('*').forEach(e => {"
                              " if (e.scrollHeight > e.clientHeight + 5) e.scrollTop += e.clientHeight; });")
        time.sleep(1)
    driver.save_screenshot(str(shot))
    missing = [n for n in needles if n not in seen]
    pytest.fail(f"{url} never showed {missing}; it showed: {text[-1500:]}")


def test_experiment_opens_on_its_training_runs_nested_with_datasets(ui_suite, browser, tmp_path):
    from selenium.webdriver.common.by import By

    base, experiment = ui_suite["url"], ui_suite["experiment"]
    page_text(browser, f"{base}/#/experiments/{experiment}/runs", "Training runs", "ui-suite [quick]",
              "5 matching runs", shot=tmp_path / "runs.png")
    parent_cell = browser.find_element(By.LINK_TEXT, "ui-suite [quick]").find_element(
        By.XPATH, "ancestor::*[contains(@class, 'ag-cell-value')]")
    parent_cell.find_element(By.CSS_SELECTOR, "button").click()  # expand the parent's children
    children = ui_suite["children"]
    inputs = MlflowClient(base).get_run(children.iloc[0]["run_id"]).inputs.dataset_inputs
    digest = next(i.dataset.digest for i in inputs if i.dataset.name == "mnist/train")
    deadline, text = time.monotonic() + 60, ""
    while time.monotonic() < deadline:
        text = browser.execute_script("return document.body.innerText")
        if all(f"{label} seed={seed}" in text for label in ("softmax", "lenet") for seed in (0, 1)) and digest in text:
            break
        time.sleep(1)
    browser.save_screenshot(str(tmp_path / "runs-expanded.png"))
    for label in ("softmax", "lenet"):
        for seed in (0, 1):
            assert f"{label} seed={seed}" in text, text[-1500:]
    assert f"mnist/train ({digest})" in text and "Training" in text and "Validation" in text


def test_system_metrics_tab_draws_charts(ui_suite, browser, tmp_path):
    children = ui_suite["children"]
    slow = children[(children["tags.bench.label"] == "lenet") & (children["tags.bench.seed"] == "0")]["run_id"].iloc[0]
    url = f"{ui_suite['url']}/#/experiments/{ui_suite['experiment']}/runs/{slow}/system-metrics"
    # The charts below the fold render when scrolled to; the first row is always drawn.
    page_text(browser, url, "System metrics", "cpu_utilization_percentage", "disk_usage_megabytes", "lenet seed=0",
              shot=tmp_path / "system-metrics.png")
    # The chart titles are text before plotly has drawn into them: wait for the plots themselves.
    deadline, charts = time.monotonic() + 60, 0
    while time.monotonic() < deadline:
        charts = browser.execute_script("return document.querySelectorAll('.js-plotly-plot').length")
        if charts >= 2:
            break
        time.sleep(1)
    browser.save_screenshot(str(tmp_path / "system-metrics-drawn.png"))
    assert charts >= 2, f"{charts} plotly chart(s) drawn after 60 s"


def test_compare_page_of_the_suites_children_renders(ui_suite, browser, tmp_path):
    ids = list(ui_suite["children"]["run_id"])
    url = (f"{ui_suite['url']}/#/compare-runs?runs={json.dumps(ids)}"
           f"&experiments={json.dumps([ui_suite['experiment']])}")
    names = [f"{label} seed={seed}" for label in ("softmax", "lenet") for seed in (0, 1)]
    # Every needle is waited for: the page fills its tables in several passes.
    page_text(browser, url, f"Comparing {len(ids)} Runs", "Parameters", "val_acc", "knob.width", *names,
              shot=tmp_path / "compare.png")


STUDY = """\
[study]
name = "ui-study"
dataset = "mnist"
variant = "softmax"
epochs = 2
n_trials = 3
pruner = "none"

[training]
max_train_samples = 200

[space]
lr = { low = 1e-3, high = 0.3, log = true }
"""


def test_optuna_dashboard_shows_the_studys_trials(browser, tmp_path):
    from bench.search import load_study, run_search

    (tmp_path / "ui-study.toml").write_text(STUDY)
    journal = tmp_path / "ui-study.journal"
    run_search(load_study(tmp_path / "ui-study.toml"), storage=str(journal), register_best=False, echo=lambda _: None)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "dashboard", str(tmp_path / "ui-study.toml"), "--storage", str(journal),
         "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                studies = json.load(urllib.request.urlopen(f"{base}/api/studies", timeout=2))
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("bench dashboard did not start: " + (proc.stdout.read() if proc.poll() is not None else ""))
                time.sleep(0.5)
        [summary] = studies["study_summaries"]
        assert summary["study_name"] == "ui-study"
        text = page_text(browser, f"{base}/dashboard/studies/{summary['study_id']}/trials", "ui-study", "Trial 0",
                         "Trial 2", shot=tmp_path / "dashboard.png")
        assert "COMPLETE" in text.upper()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_dashboard_refuses_a_study_that_was_never_run(tmp_path):
    (tmp_path / "ui-study.toml").write_text(STUDY)
    done = subprocess.run([sys.executable, "-m", "bench", "dashboard", str(tmp_path / "ui-study.toml"),
                           "--storage", str(tmp_path / "none.journal")], capture_output=True, text=True,
                          env={**os.environ}, timeout=60)
    assert done.returncode == 2 and "run `bench search" in done.stderr
