"""Verdicts against the baseline and the sources, on numbers whose answers are known."""

import math

import pytest
from scipy import stats

from bench.verdicts import against_baseline, against_source

A = [0.90, 0.91, 0.89]  # mean .90, sample variance 1e-4
B = [0.88, 0.87, 0.885]  # mean .878333, sample variance 5.833e-5


def test_welch_interval_matches_the_textbook_formula():
    row = against_baseline({"base": B, "row": A}, "base").set_index("label").loc["row"]
    var_a, var_b = stats.tvar(A), stats.tvar(B)
    se = math.sqrt(var_a / 3 + var_b / 3)
    df = (var_a / 3 + var_b / 3) ** 2 / ((var_a / 3) ** 2 / 2 + (var_b / 3) ** 2 / 2)  # Welch-Satterthwaite
    half = stats.t.ppf(0.975, df) * se
    diff = sum(A) / 3 - sum(B) / 3
    assert row["diff"] == pytest.approx(diff)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((diff - half, diff + half))
    assert (round(row["ci_low"], 4), round(row["ci_high"], 4)) == (0.0009, 0.0424)
    assert row["p"] == pytest.approx(2 * stats.t.sf(diff / se, df))
    assert row["verdict"] == "better"  # p = 0.044 < 0.05, and the only comparison


def test_holm_correction_takes_back_a_verdict_that_many_comparisons_make_likely():
    worse = [0.80, 0.81, 0.79]  # clearly below the baseline
    table = against_baseline({"base": B, "a": A, "worse": worse, "same": [0.879, 0.875, 0.881]}, "base")
    table = table.set_index("label")
    assert table.loc["a", "p"] < 0.05  # alone it would be "better"...
    assert table.loc["a", "verdict"] == "no evidence at 3 seeds"  # ...but not among 3 comparisons
    assert table.loc["worse", "verdict"] == "worse"
    # Holm's step-down: the k-th smallest p times (m - k + 1), kept monotone, capped at 1.
    raw = table.drop("base")["p"].sort_values()
    expected, running = {}, 0.0
    for k, (label, p) in enumerate(raw.items()):
        running = max(running, min(1.0, (len(raw) - k) * p))
        expected[label] = running
    for label, p in expected.items():
        assert table.loc[label, "p_holm"] == pytest.approx(p)
    assert table.loc["base", "verdict"] == "baseline"


def test_one_seed_gives_no_verdict_rather_than_a_false_one():
    table = against_baseline({"base": [0.80], "row": [0.95]}, "base").set_index("label")
    assert table.loc["row", "verdict"] == "needs 2 seeds per row (has 1)"
    assert math.isnan(table.loc["row", "ci_low"]) and math.isnan(table.loc["row", "p_holm"])
    two = against_baseline({"base": [0.80, 0.81], "row": [0.95]}, "base").set_index("label")
    assert two.loc["row", "verdict"] == "needs 2 seeds per row (has 1)"


def test_no_baseline_and_identical_runs():
    assert set(against_baseline({"a": A, "b": B}, None)["verdict"]) == {"no baseline declared"}
    same = against_baseline({"base": [0.9, 0.9], "twin": [0.9, 0.9]}, "base").set_index("label")
    assert same.loc["twin", "verdict"] == "identical runs"


def test_published_difference_is_judged_only_at_the_same_epochs():
    ours = {"train_acc": 0.95, "val_acc": 0.885, "test_acc": 0.88}
    hit = against_source(ours, 100, {"train_acc": 0.93, "val_acc": 0.90}, source_epochs=100)
    assert hit["val_acc_diff"] == pytest.approx(-0.015) and hit["val_acc_within_2pt"] is True
    assert hit["train_acc_diff"] == pytest.approx(0.02) and hit["train_acc_within_2pt"] is True
    assert hit["val_acc_epochs"] == 100 and hit["comparable"]
    assert "test_acc" not in hit
    # Other epochs and no curve: the difference from the figure is given, with its epochs, but not judged.
    off = against_source(ours, 100, {"test_acc": 0.9834, "epochs": 9}, source_epochs=None)
    assert off["test_acc_diff"] == pytest.approx(0.88 - 0.9834) and off["test_acc_epochs"] == 9
    assert off["test_acc_within_2pt"] is None and not off["comparable"]
    far = against_source(ours, 9, {"test_acc": 0.9834, "epochs": 9}, source_epochs=None)
    assert far["test_acc_within_2pt"] is False


def test_a_published_curve_gives_the_value_at_our_epochs():
    ours = {"train_acc": 0.95, "val_acc": 0.95, "test_acc": 0.95}
    lenet = {"test_acc": 0.9834, "epochs": 9, "curve": {"1": 0.9461, "2": 0.9643, "9": 0.9834}}
    one = against_source(ours, 1, lenet, source_epochs=None)
    assert one["test_acc"] == 0.9461 and one["test_acc_epochs"] == 1 and one["comparable"]
    assert one["test_acc_diff"] == pytest.approx(0.95 - 0.9461) and one["test_acc_within_2pt"] is True
    three = against_source(ours, 3, lenet, source_epochs=None)  # no point at 3 epochs: the figure, not judged
    assert three["test_acc"] == 0.9834 and three["test_acc_epochs"] == 9 and three["test_acc_within_2pt"] is None


def test_published_cells_say_when_the_epochs_differ():
    from bench.suites.summary import published_cell

    row = {"epochs": 1, "s.test_acc": 0.9211, "s.test_acc_epochs": 2, "s.test_acc_diff": -0.0513,
           "s.test_acc_within_2pt": None}
    assert published_cell(row, "s", "test_acc") == "0.9211 -0.0513 (theirs after 2 epochs, ours 1)"
    row.update({"s.test_acc_epochs": 1, "s.test_acc_within_2pt": False})
    assert published_cell(row, "s", "test_acc") == "0.9211 -0.0513 (beyond 2 pt)"
