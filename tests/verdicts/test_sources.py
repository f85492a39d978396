"""Published numbers: judged at our epochs, only like for like, and measured the source's way."""

import pytest

from bench.suites.summary import published_cell
from bench.verdicts import against_source

OURS = {"train_acc": 0.93, "train_acc_eval": 0.95, "val_acc": 0.885, "test_acc": 0.88,
        "train_acc_train_mode": 0.91, "val_acc_train_mode": 0.87}


def settings(epochs=100, **more):
    return {"epochs": epochs, "optimizer": "sgd", "lr": 0.01, "batch_size": 64, "train_images": 10000, **more}


def test_published_difference_is_judged_only_at_the_same_epochs():
    hit = against_source(OURS, settings(), {"train_acc": 0.93, "val_acc": 0.90}, {"epochs": 100})
    assert hit["val_acc_diff"] == pytest.approx(-0.015) and hit["val_acc_within_2pt"] is True
    # A train figure is compared with the train split measured after training, in eval mode.
    assert hit["train_acc_diff"] == pytest.approx(0.02) and hit["train_acc_ours"] == "train_acc_eval"
    assert hit["val_acc_epochs"] == 100 and hit["val_acc_differs"] == ""
    assert "test_acc" not in hit
    # Other epochs and no curve: the difference from the figure is given, with its epochs, but not judged.
    off = against_source(OURS, settings(), {"test_acc": 0.9834, "epochs": 9}, {})
    assert off["test_acc_diff"] == pytest.approx(0.88 - 0.9834) and off["test_acc_epochs"] == 9
    assert off["test_acc_within_2pt"] is None and off["test_acc_differs"] == "theirs after 9 epochs, ours 100"
    far = against_source(OURS, settings(9), {"test_acc": 0.9834, "epochs": 9}, {})
    assert far["test_acc_within_2pt"] is False


def test_a_published_curve_gives_the_value_at_our_epochs():
    ours = {"test_acc": 0.95}
    lenet = {"test_acc": 0.9834, "epochs": 9, "curve": {"1": 0.9461, "2": 0.9643, "9": 0.9834}}
    one = against_source(ours, settings(1), lenet, {})
    assert one["test_acc"] == 0.9461 and one["test_acc_epochs"] == 1 and one["test_acc_differs"] == ""
    assert one["test_acc_diff"] == pytest.approx(0.95 - 0.9461) and one["test_acc_within_2pt"] is True
    three = against_source(ours, settings(3), lenet, {})  # no point at 3 epochs: the figure, not judged
    assert three["test_acc"] == 0.9834 and three["test_acc_epochs"] == 9 and three["test_acc_within_2pt"] is None


def test_a_figure_from_other_training_settings_is_shown_not_judged():
    # Two machines on --max-train-samples 3000 were judged against LeNet's 60,000-image curve: "beyond 2 pt".
    source = {"train_images": 60000, "batch_size": 64}
    lenet = {"test_acc": 0.9834, "epochs": 9, "optimizer": "momentum", "lr": 0.01, "curve": {"1": 0.9461}}
    subset = against_source({"test_acc": 0.6477}, settings(1, optimizer="momentum", train_images=3000), lenet, source)
    assert subset["test_acc_within_2pt"] is None
    assert subset["test_acc_differs"] == "train images theirs 60,000, ours 3,000"
    other_lr = against_source({"test_acc": 0.95}, settings(1, optimizer="momentum", train_images=60000, lr=0.05),
                              lenet, source)
    assert other_lr["test_acc_within_2pt"] is None and other_lr["test_acc_differs"] == "lr theirs 0.01, ours 0.05"
    same = against_source({"test_acc": 0.95}, settings(1, optimizer="momentum", train_images=60000), lenet, source)
    assert same["test_acc_within_2pt"] is True and same["test_acc_differs"] == ""


def test_a_train_mode_source_is_compared_with_our_train_mode_measurement():
    book = {"protocol": "train-mode", "epochs": 100}
    found = against_source(OURS, settings(), {"train_acc": 0.89, "val_acc": 0.88}, book)
    assert found["val_acc_ours"] == "val_acc_train_mode" and found["val_acc_diff"] == pytest.approx(0.87 - 0.88)
    assert found["train_acc_ours"] == "train_acc_train_mode" and found["train_acc_diff"] == pytest.approx(0.91 - 0.89)
    missing = against_source({"val_acc": 0.88}, settings(), {"val_acc": 0.88}, book)
    assert missing["val_acc_within_2pt"] is None and "did not measure val_acc_train_mode" in missing["val_acc_differs"]


def test_published_cells_say_what_differs():
    row = {"epochs": 1, "s.test_acc": 0.9211, "s.test_acc_epochs": 2, "s.test_acc_diff": -0.0513,
           "s.test_acc_within_2pt": None}
    assert published_cell(row, "s", "test_acc") == "0.9211 -0.0513 (theirs after 2 epochs, ours 1)"
    row["s.test_acc_differs"] = "train images theirs 60,000, ours 3,000"
    assert published_cell(row, "s", "test_acc") == "0.9211 -0.0513 (train images theirs 60,000, ours 3,000)"
    row.update({"s.test_acc_epochs": 1, "s.test_acc_within_2pt": False, "s.test_acc_differs": ""})
    assert published_cell(row, "s", "test_acc") == "0.9211 -0.0513 (beyond 2 pt)"
