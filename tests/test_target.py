"""Time to a target accuracy: epochs and seconds to first reach it, judged against the baseline."""

from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest
from scipy import stats

from bench import tracking
from bench.report import build_report
from bench.suites import format_summary, load_suite, run_suite
from bench.suites.curves import learning_curves

SUITE = """\
[suite]
name = "target-test"
dataset = "mnist"
seeds = [0, 1]
baseline = "softmax"
measure = "val_acc"
target = 0.5

[defaults]
max_train_samples = 300
batch_size = 25
epochs = 2

[profiles.quick]

[[variants]]
variant = "softmax"

[[variants]]
variant = "softmax"
label = "softmax-again"

[[variants]]
variant = "lenet"
label = "lenet-narrow"
knobs = { width = 2 }
lr = 1e-4  # barely learns: never reaches 50 %
"""


def test_each_row_gets_its_time_to_the_target_and_a_verdict_on_it(tmp_path):
    path = tmp_path / "target-test.toml"
    path.write_text(SUITE)
    outcome = run_suite(load_suite(path), "quick", log_models=False, progress=False, echo=lambda _: None)
    summary = outcome.summary.set_index("label")
    curves = learning_curves(tracking.child_runs(outcome.parent_run_id).assign(
        seed=lambda f: f["tags.bench.seed"].astype(int)))
    first = {(row, seed): runs[runs["val_acc"] >= 0.5]["epoch"].min()
             for (row, seed), runs in curves.groupby(["row", "seed"])}
    softmax = [first[("softmax", seed)] for seed in (0, 1)]
    assert summary.loc["softmax", "target_epochs_mean"] == pytest.approx(sum(softmax) / 2)
    assert summary.loc["softmax", "target_verdict"] == "baseline"
    # The same config again: the same epochs to the target, seed by seed.
    assert summary.loc["softmax-again", "target_verdict"] == "identical (every seed the same)"
    assert summary.loc["lenet-narrow", "target_not_reached"] == 2
    assert summary.loc["lenet-narrow", "target_verdict"] == "not judged: not reached in 2 of 2"
    text = format_summary(outcome.summary)
    assert "Time to val acc >= 50 %" in text and "0 of 2" in text
    page_dir = build_report(outcome.parent_run_id, tmp_path / "out", log=False).out_dir
    table = pd.read_csv(page_dir / "summary.csv").set_index("variant_row")
    assert table.loc["lenet-narrow", "target_not_reached"] == 2
    # Each row's mean epochs with its 95 % t-interval over the runs that reached the target, in the CSV and page.
    low, high = stats.t.interval(0.95, 1, loc=sum(softmax) / 2, scale=stats.sem(softmax)) if softmax[0] != softmax[1] \
        else (sum(softmax) / 2, sum(softmax) / 2)
    assert table.loc["softmax", "target_epochs_ci_low"] == pytest.approx(low)
    assert table.loc["softmax", "target_epochs_ci_high"] == pytest.approx(high)
    page = " ".join((page_dir / "index.html").read_text().split())
    assert "Time to val accuracy after the last epoch of 50 %" in page
    assert "<td>lenet-narrow</td><td>0 of 2</td>" in page and "not judged: not reached in 2 of 2" in page
    assert f"<td>softmax</td><td>2 of 2</td><td>{sum(softmax) / 2:.1f} [{low:.1f}, {high:.1f}]</td>" in page
    logged = pd.read_csv(page_dir / "curves.csv")
    assert len(logged) == 3 * 2 * 2 and set(logged.columns) >= {  # 3 rows x 2 seeds x 2 epochs"row", "seed", "epoch", "val_acc", "val_acc_last_k",
                                                                "val_acc_ema", "seconds"}
    assert "curves.csv" in tracking.list_artifacts(outcome.parent_run_id)


def synthetic(values: dict[str, list[float]], epochs: dict[str, list[float]], failed=()) -> tuple:
    """A suite's pair outcomes and times to its target, as numbers (no training)."""
    from bench.suites import parse_suite

    text = "[suite]\nname = 'sim'\ndataset = 'mnist'\nbaseline = 'base'\ntarget = 0.8\n[profiles.quick]\n" + "".join(
        f"[[variants]]\nvariant = 'softmax'\nlabel = '{label}'\n" for label in values)
    suite = parse_suite(text, "sim.toml", check_variants=False)
    rows = []
    for label, accs in values.items():
        for seed, acc in enumerate(accs):
            state = "failed" if (label, seed) in failed else "finished"
            rows.append({f"tags.{tracking.TAG_LABEL}": label, "seed": seed, "pair_state": state,
                         "pair_reason": "" if state == "finished" else "boom", "run_id": f"{label}{seed}",
                         "status": "FINISHED", "metrics.val_acc_last_k": acc, "metrics.val_acc": acc,
                         "start_time": pd.Timestamp(0), "end_time": pd.Timestamp(10), "params.last_k": "5"})
    reached = pd.DataFrame([{"row": label, "seed": seed, "epochs": e, "seconds": e * 10.0}
                            for label, es in epochs.items() for seed, e in enumerate(es)])
    return pd.DataFrame(rows), suite, reached


def test_the_method_note_counts_every_comparison_in_the_family():
    from bench.suites.summary import method_text, summarize

    accs = {"base": [.80, .81, .79], "a": [.812, .823, .801], "b": [.80, .81, .79], "c": [.805, .812, .796]}
    outcomes, suite, reached = synthetic(accs, {"base": [5, 6, 5], "a": [4, 4, 3], "b": [5, 5, 5], "c": [4, 4, 3.5]},
                                         failed={("b", 1)})
    summary = summarize(outcomes, suite, reached=reached)
    # 3 accuracy comparisons (b not judged: its failed run) and 3 times to the target: 6 corrected together.
    assert summary.attrs["family"] == 6
    assert "All 12 hypotheses of the 6 comparison(s) form one family" in method_text(summary)


def test_a_baseline_that_missed_the_target_leaves_the_times_unjudged_but_in_the_family():
    from bench.suites.summary import summarize

    accs = {"base": [.80, .81, .79, .80], "a": [.812, .823, .801, .811], "c": [.805, .812, .796, .80]}
    reached_all = {"base": [5, 6, 5, 6], "a": [4, 4.5, 3, 4], "c": [4, 5, 3.5, 5]}
    missed = {**reached_all, "base": [5, 6, 5, math.nan]}
    def judged(epochs):
        outcomes, suite, reached = synthetic(accs, epochs)
        return summarize(outcomes, suite, reached=reached).set_index("label")

    full, short = judged(reached_all), judged(missed)
    for row in ("a", "c"):
        assert short.loc[row, "target_kind"] == "not judged"
        assert short.loc[row, "target_verdict"] == "not judged: base did not reach it in 1 of 4"
        # The time comparisons still count: the accuracy verdicts are corrected for as many comparisons.
        assert short.loc[row, "baseline_p_holm"] == pytest.approx(full.loc[row, "baseline_p_holm"])
        assert short.loc[row, "baseline_ci_level"] == pytest.approx(full.loc[row, "baseline_ci_level"])


def test_each_decided_row_records_the_look_that_decided_it():
    from bench.suites.summary import decisions, summarize
    from bench.verdicts.sequential import Look

    accs = {"base": [.80, .81, .79, .80, .82, .78], "same": [.8005, .8103, .7898, .8004, .8197, .7802],
            "kept": [.80, .81, .79, .80, .82, .78], "noisy": [.70, .90, .75, .85, .80, .79],
            "broken": [.8005, .8103, .7898, .8004, .8197, .7802, .80]}  # its seed 6 failed (base has none)
    outcomes, suite, _ = synthetic(accs, {}, failed={("broken", 6)})
    suite = dataclasses.replace(suite, target=None)
    look2 = Look((0.5, 1.0), 2, "obf")
    kept = {"verdict_kind": "worse", "verdict": "worse", "baseline_diff": -0.02, "decided_at": 1}
    summary = summarize(outcomes, suite, look=look2, decided={"kept": kept}).set_index("label")
    assert summary.loc["same", "verdict_kind"] == "equivalent" and summary.loc["same", "decided_at"] == 2  # this look
    assert summary.loc["kept", "verdict"] == "worse" and summary.loc["kept", "decided_at"] == 1  # as look 1 said
    assert summary.loc["noisy", "verdict_kind"] == "undecided" and math.isnan(summary.loc["noisy", "decided_at"])
    assert math.isnan(summary.loc["base", "decided_at"])
    assert summary.loc["broken", "verdict_kind"] == "not judged" and math.isnan(summary.loc["broken", "decided_at"])
    assert {k: d["decided_at"] for k, d in decisions(summary.reset_index(), 2).items()} == {"same": 2, "kept": 1}


def test_a_runs_cost_is_what_one_run_takes_not_the_hours_a_resumed_one_lay_stopped():
    from bench.suites.summary import summarize

    outcomes, suite, _ = synthetic({"base": [.80, .81, .79], "a": [.80, .81], "b": [.80, .81, .79]}, {})
    outcomes["end_time"] = pd.Timestamp(0) + pd.Timedelta(seconds=10)
    label = outcomes[f"tags.{tracking.TAG_LABEL}"]
    outcomes.loc[label == "a", "end_time"] = pd.Timestamp(0) + pd.Timedelta(hours=20)  # killed, resumed next day...
    outcomes[f"tags.{tracking.TAG_RESUMED}"] = None
    outcomes.loc[(label == "a") & (outcomes["seed"] == 0), f"tags.{tracking.TAG_RESUMED}"] = "3"  # ...one tagged
    outcomes.loc[(label == "b") & (outcomes["seed"] == 0), "end_time"] = pd.Timestamp(0) + pd.Timedelta(hours=20)
    summary = summarize(outcomes, dataclasses.replace(suite, target=None)).set_index("label")
    assert summary.loc["base", "s_per_run"] == 10.0
    assert summary.loc["a", "s_per_run"] == 72000.0  # its one span not resumed (as far as bench knows)
    assert summary.loc["b", "s_per_run"] == 10.0  # one run resumed before bench tagged them: the median
    outcomes.loc[label == "a", f"tags.{tracking.TAG_RESUMED}"] = "3"
    every_run_resumed = summarize(outcomes, dataclasses.replace(suite, target=None)).set_index("label")
    assert math.isnan(every_run_resumed.loc["a", "s_per_run"])  # the cost falls back to epochs x s/epoch


def test_the_reports_verdict_cell_names_the_look_that_decided_a_row_under_a_schedule():
    from bench.report.pages import RunLinks
    from bench.report.suite_page import _row
    from bench.suites.summary import summarize
    from bench.verdicts.sequential import Look

    outcomes, suite, _ = synthetic({"base": [.80, .81, .79, .80, .82, .78],
                                    "same": [.8005, .8103, .7898, .8004, .8197, .7802]}, {})
    summary = summarize(outcomes, dataclasses.replace(suite, target=None), look=Look((0.5, 1.0), 2, "obf"))
    same = summary[summary["label"] == "same"].iloc[0]
    link = RunLinks("http://127.0.0.1:5000", "0")
    verdicts = {cls: text for text, cls in _row(same, link, looks=2)["cells"] if cls.startswith("verdict")}
    assert verdicts == {"verdict equivalent": "equivalent within ±1 pt (look 2)"}
    assert "(look" not in " ".join(text for text, _ in _row(same, link, looks=1)["cells"])  # fixed seeds: one look
