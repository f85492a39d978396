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


VERDICT_SUITE = """\
[suite]
name = "ui-verdicts"
dataset = "mnist"
seeds = [0, 1, 2]
baseline = "softmax"

[defaults]
max_train_samples = 600
epochs = 1
lr = 0.1

[profiles.quick]

[[variants]]
variant = "softmax"

[[variants]]
variant = "softmax"
label = "softmax-frozen"
lr = 1e-7  # stays at its random init: worse than the baseline at any seed
"""
VERDICT_COLUMN = "tags.`bench.verdict`"  # the runs table's column id for the tag


@pytest.fixture(scope="module")
def verdict_suite(server, tmp_path_factory):  # noqa: F811
    from bench.report import log_verdicts_figure

    root = tmp_path_factory.mktemp("ui-verdicts")
    (root / "ui-verdicts.toml").write_text(VERDICT_SUITE)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", server)
        outcome = run_suite(load_suite(root / "ui-verdicts.toml"), "quick", log_models=False, progress=False,
                            echo=lambda _: None, overrides={"threads": 1})
        assert log_verdicts_figure(outcome.parent_run_id, outcome.summary)  # what `bench suite` does at its end
        children = tracking.child_runs(outcome.parent_run_id)
        experiment_id = tracking.get_run(outcome.parent_run_id).info.experiment_id
    kinds = dict(zip(children["run_id"], children["tags.bench.verdict"]))
    assert sorted(kinds.values()) == ["baseline"] * 3 + ["worse"] * 3
    return {"url": server, "experiment": experiment_id, "parent": outcome.parent_run_id, "kinds": kinds}


def verdict_cells(driver) -> dict[str, str]:
    """run id -> the text of its row's bench.verdict cell, for the rows the runs table has rendered."""
    return driver.execute_script(
        "const out = {}; document.querySelectorAll('[row-id] [col-id]').forEach(c => {"
        f" if (c.getAttribute('col-id') === {json.dumps(VERDICT_COLUMN)})"
        "  out[c.closest('[row-id]').getAttribute('row-id')] = c.innerText.trim(); }); return out;")


def expand_parent(driver, name: str) -> None:
    from selenium.webdriver.common.by import By

    cell = driver.find_element(By.LINK_TEXT, name).find_element(By.XPATH, "ancestor::*[contains(@class, 'ag-cell-value')]")
    cell.find_element(By.CSS_SELECTOR, "button").click()


def wait_until(driver, check, what: str, shot, timeout: float = 60):
    """``check()``'s value once it is truthy; fail naming ``what`` (and the last value) after ``timeout``,
    with a screenshot in ``shot``."""
    deadline, value = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1)
    driver.save_screenshot(str(shot))
    pytest.fail(f"never saw {what}; last: {value!r}")


def test_the_runs_table_shows_each_runs_verdict_and_filters_by_it(verdict_suite, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    base, experiment, kinds = verdict_suite["url"], verdict_suite["experiment"], verdict_suite["kinds"]
    url = f"{base}/#/experiments/{experiment}/runs"
    browser.set_window_size(2600, 1000)  # the table draws only the columns in view: room for the added one
    page_text(browser, url, "Training runs", sections={("Run Name", "7 matching runs"): ["ui-verdicts [quick]"]},
              shot=tmp_path / "runs.png")
    # As a user adds a column: Columns, search "bench.verdict", tick the tag, close the menu.
    next(b for b in browser.find_elements(By.TAG_NAME, "button") if b.text.strip() == "Columns").click()
    wait_until(browser, lambda: browser.switch_to.active_element.get_attribute("placeholder") == "Search columns",
               "the column search box", tmp_path / "columns.png")
    browser.switch_to.active_element.send_keys("bench.verdict")
    wait_until(browser, lambda: [e for e in browser.find_elements(By.XPATH, "//*[normalize-space(text())='bench.verdict']")
                        if "tree-title" in (e.get_attribute("class") or "")], "bench.verdict in the column list",
               tmp_path / "columns.png")[0].click()
    browser.switch_to.active_element.send_keys(Keys.ESCAPE)
    expand_parent(browser, "ui-verdicts [quick]")
    # Every child's row shows its own verdict in the bench.verdict column (the parent's holds none).
    shown = wait_until(browser, lambda: (lambda cells: cells if set(kinds) <= set(cells) else None)(verdict_cells(browser)),
                       "a bench.verdict cell for every child run", tmp_path / "verdict-column.png")
    browser.save_screenshot(str(tmp_path / "verdict-column.png"))
    assert {run_id: shown[run_id] for run_id in kinds} == kinds
    assert shown[verdict_suite["parent"]] == "-"
    # The search box filters on it: only the worse row's runs (under their parent) are listed.
    worse = {run_id for run_id, kind in kinds.items() if kind == "worse"}
    filtered = url + "?searchFilter=" + urllib.parse.quote("tags.bench.verdict = 'worse'")
    page_text(browser, filtered, "Run Name", "ui-verdicts [quick]", shot=tmp_path / "filtered.png")

    def listed() -> set[str]:
        return set(browser.execute_script(
            "return Array.from(document.querySelectorAll('[row-id]')).map(r => r.getAttribute('row-id'))"))

    wait_until(browser, lambda: verdict_suite["parent"] in listed(), "the parent listed", tmp_path / "filtered.png")
    time.sleep(2)
    if not worse & listed():  # the table keeps a parent expanded across pages; expand it when it is not
        expand_parent(browser, "ui-verdicts [quick]")
    rows = wait_until(browser, lambda: (lambda ids: ids if worse <= ids else None)(listed()), "the worse runs listed",
                      tmp_path / "filtered.png")
    browser.save_screenshot(str(tmp_path / "filtered.png"))
    assert rows == worse | {verdict_suite["parent"]}


def test_history_reads_a_tracking_server(verdict_suite, monkeypatch):
    from bench.suites.history import format_history, history

    monkeypatch.setenv("MLFLOW_TRACKING_URI", verdict_suite["url"])
    found = history("ui-verdicts:quick")
    assert found.runs == 1 and list(found.rows["row"]) == ["softmax", "softmax-frozen"]
    assert list(found.rows["verdict_kind"]) == ["baseline", "worse"]
    assert "history of ui-verdicts:quick: 1 parent run(s) on 1 machine(s)" in format_history(found)


def test_the_parent_run_page_renders_the_verdicts_table_and_the_forest_plot(verdict_suite, browser, tmp_path):
    from selenium.webdriver.common.by import By

    base, experiment, parent = verdict_suite["url"], verdict_suite["experiment"], verdict_suite["parent"]
    url = f"{base}/#/experiments/{experiment}/runs/{parent}/artifacts/verdicts.json"
    # The logged table in MLflow's table view: its header, then each row's look, label, verdict and seeds.
    page_text(browser, url, "View as table", "look\nrow\nverdict\nseeds\nmean %", "1\nsoftmax\nbaseline\n3",
              "1\nsoftmax-frozen\nworse\n3", shot=tmp_path / "verdicts-table.png")
    tree = browser.find_elements(By.XPATH, "//*[normalize-space(text())='verdicts.png']")
    tree[0].click()
    drawn = wait_until(browser, lambda: browser.execute_script(
        "return Array.from(document.images).filter(i => i.complete && i.naturalWidth > 300)"
        ".map(i => [decodeURIComponent(i.src).slice(0, 200), i.naturalWidth])"), "the forest plot drawn",
        tmp_path / "verdicts-figure.png")
    browser.save_screenshot(str(tmp_path / "verdicts-figure.png"))
    assert drawn


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
