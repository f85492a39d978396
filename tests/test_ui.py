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
import urllib.parse
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


Section = tuple[str, str]  # the first and the last line of a part of a page, both excluded


def route(url: str) -> str:
    """Which page a URL shows: the path and the hash route, without the query an SPA adds or encodes."""
    return urllib.parse.unquote(url).split("?")[0]


def section(text: str, part: Section) -> str | None:
    """The lines of ``text`` between the line ``part[0]`` and the next line ``part[1]``; None when the
    page does not show that part."""
    lines = [line.strip() for line in text.splitlines()]
    if part[0] not in lines:
        return None
    start = lines.index(part[0]) + 1
    if part[1] not in lines[start:]:
        return None
    return "\n".join(lines[start:lines.index(part[1], start)])


def wait_for(driver, url: str, *needles: str, sections: dict[Section, list[str]] | None = None, shot,
             timeout: float = 90) -> str:
    """Wait until each needle has been seen on the page of ``url`` (the browser showing that route), each of
    ``sections``' needles inside its part of that page; fail naming what was never seen where it must be.

    Long tables render only the rows in view, so the panes are scrolled and needles may be seen in
    different snapshots; but each needle counts only inside one snapshot of the right page and part, never
    in text that another page (a redirect, the previous route, a loading screen's) or part showed.
    """
    wanted = [(None, n) for n in needles] + [(part, n) for part, ns in (sections or {}).items() for n in ns]
    seen: set[tuple[Section | None, str]] = set()
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = driver.execute_script("return document.body ? document.body.innerText : ''")
        if route(driver.current_url) == route(url):
            for part, needle in wanted:
                where = text if part is None else section(text, part)
                if where is not None and needle in where:
                    seen.add((part, needle))
        if len(seen) == len(set(wanted)):
            driver.save_screenshot(str(shot))
            return text
        # As a user would: scroll every scrolled pane down, so rows below the fold get rendered, and from
        # the bottom back to the top: what rendered late, after the pane had scrolled past it, comes round.
        driver.execute_script("document.querySelectorAll('*').forEach(e => {"
                              " if (e.scrollHeight > e.clientHeight + 5) {"
                              "  e.scrollTop = e.scrollTop + e.clientHeight >= e.scrollHeight - 5 ? 0"
                              "   : e.scrollTop + e.clientHeight; } });")
        time.sleep(1)
    driver.save_screenshot(str(shot))
    missing = [f"{n!r}" + ("" if part is None else f" between {part[0]!r} and {part[1]!r}")
               for part, n in wanted if (part, n) not in seen]
    pytest.fail(f"{url} (at {driver.current_url}) never showed {'; '.join(missing)}; it showed: {text[-1500:]}")


def page_text(driver, url: str, *needles: str, sections: dict[Section, list[str]] | None = None, shot,
              timeout: float = 90) -> str:
    """Open ``url`` and ``wait_for`` its needles; the text of the last snapshot."""
    driver.get(url)
    return wait_for(driver, url, *needles, sections=sections, shot=shot, timeout=timeout)


class FakeDriver:
    """Shows ``pages`` one snapshot per poll, each a (URL, text); the last stays."""

    def __init__(self, pages: list[tuple[str, str]]) -> None:
        self.pages, self.shown = pages, 0
        self.current_url = pages[0][0]

    def get(self, url: str) -> None:
        pass

    def execute_script(self, script: str) -> str | None:
        if "innerText" not in script:
            return None  # the scroll
        self.current_url, text = self.pages[min(self.shown, len(self.pages) - 1)]
        self.shown += 1
        return text

    def save_screenshot(self, path: str) -> None:
        pass


def test_a_needle_counts_only_on_its_own_page_and_in_its_own_part(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda s: None)
    compare = "http://ui/#/compare-runs?runs=[%22a%22]"
    top = "Comparing 1 Runs\nParameters:\nknob.width\nMetrics:\ntrain_loss\n"
    table = "Parameters\nlr\t0.01\nMetrics\nval_acc\t0.9\nArtifacts"
    parts = {("Parameters", "Metrics"): ["knob.width"]}
    # Rows scrolled into view one after another count, each in its own part of the right page.
    page_text(FakeDriver([(compare, top + "Parameters\nknob.width\t10\nMetrics\nArtifacts"), (compare, top + table)]),
              compare, "Comparing 1 Runs", sections={**parts, ("Metrics", "Artifacts"): ["val_acc"]}, shot=tmp_path / "s")
    # The plot's selector names knob.width; the Parameters table does not hold it.
    with pytest.raises(pytest.fail.Exception, match="never showed 'knob.width' between 'Parameters' and 'Metrics';"):
        page_text(FakeDriver([(compare, top + table)]), compare, sections=parts, shot=tmp_path / "s", timeout=0.1)
    # The previous page (the runs list, still shown after the hash changed) named the run: not this page.
    runs = "http://ui/#/experiments/1/runs?searchFilter="
    with pytest.raises(pytest.fail.Exception, match="never showed 'lenet seed=0'; it showed"):
        page_text(FakeDriver([(runs, "Training runs\nlenet seed=0"), (compare, top + table)]), compare,
                  "Comparing 1 Runs", "lenet seed=0", shot=tmp_path / "s", timeout=0.1)


RUN_TABLE = ("Run Name", "5 matching runs")  # the runs list's table: its header to its footer


def test_experiment_opens_on_its_training_runs_nested_with_datasets(ui_suite, browser, tmp_path):
    from selenium.webdriver.common.by import By

    base, experiment = ui_suite["url"], ui_suite["experiment"]
    url = f"{base}/#/experiments/{experiment}/runs"
    page_text(browser, url, "Training runs", sections={RUN_TABLE: ["ui-suite [quick]"]}, shot=tmp_path / "runs.png")
    parent_cell = browser.find_element(By.LINK_TEXT, "ui-suite [quick]").find_element(
        By.XPATH, "ancestor::*[contains(@class, 'ag-cell-value')]")
    parent_cell.find_element(By.CSS_SELECTOR, "button").click()  # expand the parent's children
    children = ui_suite["children"]
    inputs = MlflowClient(base).get_run(children.iloc[0]["run_id"]).inputs.dataset_inputs
    digests = {i.dataset.name: i.dataset.digest for i in inputs}
    # Each child in the table, and each data set in its row's Dataset cell with the context it was used in.
    wait_for(browser, url, sections={RUN_TABLE: [
        *(f"{label} seed={seed}" for label in ("softmax", "lenet") for seed in (0, 1)),
        f"mnist/train ({digests['mnist/train']})\nTraining", f"mnist/val ({digests['mnist/val']})\nValidation",
    ]}, shot=tmp_path / "runs-expanded.png", timeout=60)


def test_system_metrics_tab_draws_charts(ui_suite, browser, tmp_path):
    children = ui_suite["children"]
    slow = children[(children["tags.bench.label"] == "lenet") & (children["tags.bench.seed"] == "0")]["run_id"].iloc[0]
    url = f"{ui_suite['url']}/#/experiments/{ui_suite['experiment']}/runs/{slow}/system-metrics"
    # The tab's own content (every tab of a run shows the tab names above it) holds the charts' titles,
    # and each chart's legend names this run's series: the overview's metric table names them too.
    page_text(browser, url, "lenet seed=0 (system/cpu_utilization_percentage)",
              "lenet seed=0 (system/disk_usage_megabytes)",
              sections={("Auto-refresh", "Add section"): ["System metrics", "cpu_utilization_percentage",
                                                          "disk_usage_megabytes"]},
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
    children = ui_suite["children"]
    ids = list(children["run_id"])
    url = (f"{ui_suite['url']}/#/compare-runs?runs={json.dumps(ids)}"
           f"&experiments={json.dumps([ui_suite['experiment']])}")
    names = [f"{label} seed={seed}" for label in ("softmax", "lenet") for seed in (0, 1)]
    # One column per run, in the order asked for: the knob.width row holds each run's own value (softmax
    # has no such knob), in the Parameters table, not the plot's "Parameters:" picker above it.
    width = dict(zip(children["run_id"], children["params.knob.width"]))
    widths = [width[i] if isinstance(width[i], str) else "" for i in ids]  # a missing param is NaN
    # Every needle is waited for: the page fills its tables in several passes.
    page_text(browser, url, f"Comparing {len(ids)} Runs", sections={
        ("Run details", "Parameters"): ["Run ID:\t" + "\t".join(ids), *names],
        ("Parameters", "Metrics"): [("knob.width\t" + "\t".join(widths)).strip()],
        ("Metrics", "Artifacts"): ["val_acc"],
    }, shot=tmp_path / "compare.png")


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
    outcome = run_search(load_study(tmp_path / "ui-study.toml"), storage=str(journal), register_best=False,
                         echo=lambda _: None)
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
        # The trial list (up to the selected trial's details): every trial complete, the best one marked.
        page_text(browser, f"{base}/dashboard/studies/{summary['study_id']}/trials", "ui-study (id=", sections={
            ("3 Trials", "Trial 0 (trial_id=0)"): [*(f"Trial {i}\nComplete" for i in range(3)),
                                                  f"Trial {outcome.best_trial}\nComplete\nBest Trial"],
        }, shot=tmp_path / "dashboard.png")
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
