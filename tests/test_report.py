"""Reports built from real runs logged in the session's temporary store."""

import math
from html.parser import HTMLParser

import pandas as pd
import pytest
from PIL import Image

from bench import tracking
from bench.cli import main
from bench.report import CHART_DPI, ReportError, build_report
from bench.suites import load_suite, run_suite

EVIL = "<script>alert(1)</script>"
SUITE = f"""\
[suite]
name = "report-test"
dataset = "mnist"
seeds = [0, 1]
baseline = "softmax"

[sources.made-up]
title = "made-up numbers for the test"
epochs = 2

[defaults]
max_train_samples = 300
batch_size = 50

[profiles.quick]
epochs = 2

[[variants]]
variant = "softmax"
reference.made-up = {{ val_acc = 0.80, train_acc = 0.95 }}

[[variants]]
variant = "mlp"
note = "too slow for the test"

[[variants]]
variant = "lenet"
label = "{EVIL}"
knobs = {{ width = 4 }}
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    path = root / "report-test.toml"
    path.write_text(SUITE)
    outcome = run_suite(load_suite(path), "quick", log_models=False, progress=False, echo=lambda _: None,
                        rows=["softmax", EVIL])
    return build_report("report-test", root / "out"), outcome


class TableRows(HTMLParser):
    """The text of every <td> of every <tbody> row of the summary table."""

    def __init__(self):
        super().__init__()
        self.rows, self.cell, self.in_body, self.in_summary = [], None, False, False

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.in_summary = ("id", "summary") in attrs
        elif tag == "tbody" and self.in_summary:
            self.in_body = True
        elif tag == "tr" and self.in_body:
            self.rows.append([])
        elif tag == "td" and self.in_body:
            self.cell = ""

    def handle_endtag(self, tag):
        if tag == "td" and self.cell is not None:
            self.rows[-1].append(self.cell)
            self.cell = None
        elif tag == "tbody":
            self.in_body = False

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def test_writes_every_file(report):
    built, _ = report
    assert {p.name for p in built.files} == {"accuracy.png", "curves.png", "verdicts.png", "summary.csv", "curves.csv",
                                             "index.html"}


@pytest.mark.parametrize("name, inches", [("accuracy.png", (8.6, 5)), ("curves.png", (13, 4.8)),
                                          ("verdicts.png", (9.5, 0.5 + 2.0))])
def test_png_files_open_with_the_expected_size(report, name, inches):
    built, _ = report
    with Image.open(built.out_dir / name) as image:
        image.verify()
    with Image.open(built.out_dir / name) as image:
        assert image.format == "PNG"
        assert image.size == (round(inches[0] * CHART_DPI), round(inches[1] * CHART_DPI))


def test_html_table_has_one_row_per_variant_with_the_runs_metrics(report):
    built, outcome = report
    parser = TableRows()
    parser.feed((built.out_dir / "index.html").read_text())
    assert [row[0] for row in parser.rows] == ["softmax", EVIL, "mlp"]
    assert parser.rows[2][1].startswith("not run: left out of this run (it ran only --rows")
    assert "too slow for the test" in parser.rows[2][1]
    children = tracking.child_runs(outcome.parent_run_id)
    for row in parser.rows[:2]:
        runs = children[children["tags.bench.label"] == row[0]]
        # train: the train split measured after training, in eval mode
        for column, metric in ((3, "train_acc_eval"), (4, "val_acc"), (5, "test_acc")):
            values = runs[f"metrics.{metric}"]
            assert row[column] == f"{values.mean():.4f} ± {values.std():.4f}"
        assert row[2] == "2"


def test_summary_csv_matches_the_runs_and_the_published_number(report):
    built, outcome = report
    table = pd.read_csv(built.out_dir / "summary.csv")
    assert list(table["variant_row"]) == ["softmax", EVIL]
    children = tracking.child_runs(outcome.parent_run_id)
    softmax = children[children["tags.bench.label"] == "softmax"]["metrics.val_acc"]
    row = table.iloc[0]
    assert row["val_acc_mean"] == pytest.approx(softmax.mean())
    assert row["val_acc_std"] == pytest.approx(softmax.std())
    assert row["made-up.val_acc"] == 0.80
    assert row["made-up.val_acc_diff"] == pytest.approx(softmax.mean() - 0.80)
    assert bool(row["made-up.val_acc_within_2pt"]) == (abs(softmax.mean() - 0.80) <= 0.02)
    assert math.isnan(table.iloc[1]["made-up.val_acc"])
    assert row["verdict"] == "baseline"
    assert row["num_parameters"] == 7850 and row["epochs"] == 2 and row["n_seeds"] == 2


def test_names_from_runs_are_escaped(report):
    built, _ = report
    page = (built.out_dir / "index.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert EVIL not in page


def test_page_is_self_contained_and_links_the_runs(report):
    built, outcome = report
    page = (built.out_dir / "index.html").read_text()
    assert page.count('src="data:image/png;base64,') == 3
    assert 'src="http' not in page and "<link" not in page
    assert f"/runs/{outcome.parent_run_id}" in page
    assert "[suite]" in page  # the definition is shown
    assert "torch" in page and "Environment" in page


def test_verdict_against_the_baseline_is_the_paired_test_tost_and_holm_over_the_runs(report):
    from scipy import stats

    built, outcome = report
    table = pd.read_csv(built.out_dir / "summary.csv")
    children = tracking.child_runs(outcome.parent_run_id).sort_values("tags.bench.seed")
    # The suite's defaults: the mean val of the last epochs (here both of the 2), seed by seed.
    val = {label: children[children["tags.bench.label"] == label]["metrics.val_acc_last_k"].astype(float).tolist()
           for label in ("softmax", EVIL)}
    lenet = table.iloc[1]
    expected = stats.ttest_rel(val[EVIL], val["softmax"])
    assert lenet["baseline_diff"] == pytest.approx(sum(val[EVIL]) / 2 - sum(val["softmax"]) / 2)
    assert lenet["baseline_p_holm"] == pytest.approx(expected.pvalue)  # one comparison: Holm changes nothing
    assert lenet["test"] == "paired" and lenet["measure_mean"] == pytest.approx(sum(val[EVIL]) / 2)
    # The verdict these numbers call for (default margin: 1 point), worked out here independently.
    row, base = [v + 0.01 for v in val[EVIL]], val["softmax"]
    p_equiv = max(stats.ttest_rel(row, base, alternative="greater").pvalue,
                  stats.ttest_rel([v - 0.02 for v in row], base, alternative="less").pvalue)
    # Its interval is at the level that decided it: 90 % (twice TOST's 5 %) when equivalent, else 95 %.
    level = 0.90 if p_equiv <= 0.05 else 0.95
    interval = expected.confidence_interval(level)
    assert (lenet["baseline_ci_low"], lenet["baseline_ci_high"]) == pytest.approx((interval.low, interval.high))
    assert lenet["baseline_ci_level"] == pytest.approx(level)
    if p_equiv <= 0.05:
        verdict = "equivalent within ±1 pt"
    elif expected.pvalue <= 0.05:
        verdict = "better" if lenet["baseline_diff"] > 0 else "worse"
    else:
        verdict = "undecided (2 seeds; "
    assert lenet["verdict"].startswith(verdict), (lenet["verdict"], verdict)
    assert lenet["baseline_p_equiv_holm"] == pytest.approx(p_equiv)
    page = (built.out_dir / "index.html").read_text()
    assert "Holm-Shaffer-corrected" in page and "TOST" in page and lenet["verdict"] in page


def test_report_says_when_runs_came_from_different_machines(report, tmp_path):
    built, outcome = report
    assert "different machines" not in (built.out_dir / "index.html").read_text()
    children = tracking.child_runs(outcome.parent_run_id)
    one = children["run_id"].iloc[0]
    real = children["tags.hw.machine"].iloc[0]
    assert real and "cores" in real  # every run carries its hardware tags
    for key in ("hw.cpu", "hw.logical_cores", "hw.torch_threads", "hw.memory_gib"):
        assert children[f"tags.{key}"].notna().all(), key
    tracking.set_tags(one, {"hw.machine": "Some Other CPU (AVX-512), 64 cores, 512.0 GiB"})
    try:
        again = build_report(outcome.parent_run_id, tmp_path / "mixed", log=False)
        page = (again.out_dir / "index.html").read_text()
        assert "came from 2 different machines" in page and "Some Other CPU" in page
    finally:
        tracking.set_tags(one, {"hw.machine": real})


def test_only_web_addresses_become_links(tmp_path):
    hostile = SUITE.replace('title = "made-up numbers for the test"',
                            'title = "made-up numbers for the test"\nurl = "javascript:alert(document.cookie)"')
    hostile = hostile.replace('name = "report-test"', 'name = "report-links"')
    path = tmp_path / "report-links.toml"
    path.write_text(hostile)
    run_suite(load_suite(path), "quick", log_models=False, progress=False, echo=lambda _: None, rows=["softmax"])
    page = (build_report("report-links", tmp_path / "out", log=False).out_dir / "index.html").read_text()
    assert 'href="javascript:' not in page and "javascript:alert(document.cookie) (not a web address: not linked)" in page


def test_the_curves_alone_give_the_reports_verdicts_again(report):
    """What curves.csv promises: the suite judged again without its store gives the summary's verdicts."""
    from bench.suites.rejudge import rejudge

    built, _ = report
    summary = pd.read_csv(built.out_dir / "summary.csv").set_index("variant_row")
    again = rejudge(pd.read_csv(built.out_dir / "curves.csv"), "softmax").verdicts.set_index("row")
    assert again.loc[EVIL, "verdict"] == summary.loc[EVIL, "verdict"]
    for ours, theirs in (("diff", "baseline_diff"), ("ci_low", "baseline_ci_low"), ("ci_high", "baseline_ci_high"),
                         ("mean", "measure_mean")):
        assert again.loc[EVIL, ours] == pytest.approx(summary.loc[EVIL, theirs])


def test_report_is_logged_on_the_parent_run(report):
    _, outcome = report
    assert set(tracking.list_artifacts(outcome.parent_run_id, "report")) >= {
        "report/accuracy.png", "report/curves.png", "report/summary.csv", "report/index.html",
    }


def test_unknown_target_is_a_clear_error(capsys):
    with pytest.raises(ReportError, match="no suite or study named 'nope'"):
        build_report("nope", log=False)
    with pytest.raises(SystemExit) as exit_:
        main(["report", "nope"])
    assert exit_.value.code == 2


@pytest.fixture(scope="module")
def study_report(tmp_path_factory):
    from bench.search import load_study, open_study, run_search

    root = tmp_path_factory.mktemp("study-report")
    path = root / "report-study.toml"
    path.write_text(STUDY)
    spec = load_study(path)
    run_search(spec, storage=str(root / "s.journal"), register_best=False, echo=lambda _: None)
    return build_report("report-study", root / "out"), open_study(spec, str(root / "s.journal"))


STUDY = """\
[study]
name = "report-study"
dataset = "mnist"
variant = "lenet"
epochs = 2
n_trials = 4
pruner = "none"

[training]
max_train_samples = 300
batch_size = 100

[space]
lr = { low = 1e-3, high = 0.3, log = true }
width = { low = 2, high = 8 }
"""


def test_study_report_has_history_importances_slice_and_every_trial(study_report):
    built, study = study_report
    names = {p.name for p in built.files}
    assert {"history.png", "importances.png", "slice.png", "curves.png", "summary.csv", "index.html"} <= names
    table = pd.read_csv(built.out_dir / "summary.csv")
    assert sorted(table["trial"]) == [0, 1, 2, 3]
    for trial in study.get_trials():
        row = table[table["trial"] == trial.number].iloc[0]
        assert row["val_acc"] == pytest.approx(trial.value) and row["lr"] == pytest.approx(trial.params["lr"])
    assert table["val_acc"].is_monotonic_decreasing  # best first
    page = (built.out_dir / "index.html").read_text()
    assert page.count('src="data:image/png;base64,') == 4 and "Best: trial" in page
    # register_best=False: the page says so, read from the registry, instead of claiming a model
    assert "No model of this study is in the Model Registry" in page and "registered as" not in page


@pytest.mark.parametrize("which", ["report", "study_report"])
def test_headless_chromium_decodes_every_image_without_console_errors(which, request, browser):
    built, _ = request.getfixturevalue(which)
    browser.get((built.out_dir / "index.html").resolve().as_uri())
    widths = browser.execute_script("return Array.from(document.images).map(i => i.complete ? i.naturalWidth : -1)")
    console = browser.get_log("browser")
    assert len(widths) == len([f for f in built.files if f.suffix == ".png"]) and all(w > 0 for w in widths), widths
    assert not [m for m in console if m["level"] in ("SEVERE", "ERROR")], console


def test_the_printed_summary_fits_a_100_column_terminal(report):
    from bench.suites import format_summary

    _, outcome = report
    text = format_summary(outcome.summary, margin=0.01)
    assert max(len(line) for line in text.splitlines()) <= 100, text
    assert "verdict" in text and "vs softmax, pt [CI]" in text and "made-up" in text  # sources below the table


def test_a_row_whose_runs_failed_is_listed_with_its_reason_in_the_table_csv_and_page(tmp_path):
    from bench.suites import SuiteFailed, format_summary

    failing = SUITE.replace('name = "report-test"', 'name = "report-failures"').replace(
        'note = "too slow for the test"', "lr = 1e12  # the loss becomes NaN in the first steps")
    path = tmp_path / "report-failures.toml"
    path.write_text(failing)
    with pytest.raises(SuiteFailed) as failed:
        run_suite(load_suite(path), "quick", log_models=False, progress=False, echo=lambda _: None,
                  rows=["softmax", "mlp"])
    built = build_report("report-failures", tmp_path / "out", log=False)
    parser = TableRows()
    parser.feed((built.out_dir / "index.html").read_text())
    mlp = next(row for row in parser.rows if row[0] == "mlp")
    assert mlp[2] == "0 of 2" and "not judged: 2 of 2 runs failed" in mlp
    table = pd.read_csv(built.out_dir / "summary.csv").set_index("variant_row")
    assert table.loc["mlp", ["runs", "n_seeds", "failed", "diverged", "unfinished"]].tolist() == [2, 0, 2, 0, 0]
    assert table.loc["mlp", "failures"].startswith("seeds 0, 1: NonFiniteLossError: loss became nan")
    page = (built.out_dir / "index.html").read_text()
    assert "Runs that are not measurements" in page and "NonFiniteLossError: loss became nan" in page
    text = format_summary(failed.value.summary, margin=0.01)
    assert "mlp: 2 of 2 runs failed: seeds 0, 1: NonFiniteLossError" in " ".join(text.split())
    assert max(len(line) for line in text.splitlines()) <= 100, text


@pytest.mark.parametrize("attrs, words", [
    ({"measure": "val_acc_ema"}, "val accuracy of the moving average of the weights minus net's"),
    ({"measure": "val_acc_last_k", "last_k": 5}, "mean val accuracy over the last 5 epochs minus net's"),
    ({}, "val accuracy after the last epoch minus net's"),
])
def test_the_forest_plots_axis_names_the_measure_its_verdicts_judged(attrs, words):
    from bench.report.charts import difference_label

    summary = pd.DataFrame()
    summary.attrs.update(attrs)
    assert difference_label(summary, "net").startswith(words + ", points")
