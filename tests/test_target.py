"""Time to a target accuracy: epochs and seconds to first reach it, judged against the baseline."""

from __future__ import annotations

import pandas as pd
import pytest

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
    logged = pd.read_csv(page_dir / "curves.csv")
    assert len(logged) == 3 * 2 * 2 and set(logged.columns) >= {  # 3 rows x 2 seeds x 2 epochs"row", "seed", "epoch", "val_acc", "val_acc_last_k",
                                                                "val_acc_ema", "seconds"}
    assert "curves.csv" in tracking.list_artifacts(outcome.parent_run_id)
