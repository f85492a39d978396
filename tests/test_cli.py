import os
import subprocess
import sys

import pytest

import bench.data
import bench.train
from bench.cli import main


@pytest.fixture
def no_data(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("data was loaded before the arguments were checked")

    monkeypatch.setattr(bench.train, "load_dataset", refuse)
    monkeypatch.setattr(bench.data, "load_dataset", refuse)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--variant", "nope"], "unknown variant 'nope'; accepted: net, net-width"),
        (["--dataset", "svhn"], "unknown data set 'svhn'; accepted: mnist, fashion-mnist, cifar10, cifar2"),
        (["--knob", "colour=red"], "has no knob 'colour'; accepted knobs: batchnorm, depth, dropout, width"),
        (["--variant", "softmax", "--width", "3"], "variant 'softmax' has no knob 'width'; accepted knobs: none"),
        (["--lr", "0"], "lr=0.0 is not accepted; accepted: a number > 0"),
        (["--lr", "-0.1"], "lr=-0.1 is not accepted"),
        (["--dropout", "1"], "dropout=1.0 is out of range; accepted: 0.0 <= value < 1.0"),
        (["--dropout", "-0.5"], "dropout=-0.5 is out of range"),
        (["--width", "0"], "width=0 is out of range; accepted: an integer >= 1"),
        (["--depth", "0"], "depth=0 is out of range"),
        (["--variant", "net-res-deep", "--depth", "0"], "depth=0 is out of range"),
        (["--epochs", "0"], "epochs=0 is not accepted; accepted: an integer >= 1"),
        (["--dataset", "imagefolder:/no/such/place"], "needs train/<class>/ and test/<class>/"),
    ],
)
def test_bad_input_exits_2_naming_value_and_accepted_ones(argv, message, no_data, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", *argv])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_argparse_level_errors_also_exit_2(no_data, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--optimizer", "lbfgs"])
    assert exit_.value.code == 2
    assert "invalid choice: 'lbfgs'" in capsys.readouterr().err


def test_list_shows_variants_knobs_and_parameter_counts(capsys):
    assert main(["list", "--dataset", "cifar2"]) == 0
    out = capsys.readouterr().out
    assert "net-width" in out and "38,386" in out and "18,090" in out
    assert "knobs: width=16, depth=2" in out and "fashion-mnist" in out


def test_train_prints_one_line_per_epoch_and_a_summary(capsys):
    code = main(["train", "--variant", "net", "--dataset", "cifar2", "--epochs", "2", "--max-train-samples", "256", "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    assert out.count("epoch ") == 0  # --quiet keeps only the summary
    assert "done: net on cifar2, 2 epochs" in out and "test acc" in out
    main(["train", "--variant", "lenet", "--dataset", "mnist", "--epochs", "2", "--max-train-samples", "256", "--width", "4"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2 and "val loss" in lines[0] and "img/s" in lines[0]


def test_python_dash_m_bench_is_the_same_cli():
    result = subprocess.run([sys.executable, "-m", "bench", "train", "--lr", "-1"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "lr=-1.0 is not accepted" in result.stderr


def test_missing_data_is_one_clear_line_and_exit_1(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(bench.data, "_download", lambda info, downloads: (_ for _ in ()).throw(OSError("offline")))
    code = main(["train", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path), "--no-tracking"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("bench: error: data set 'fashion-mnist' not found")
    assert "Traceback" not in err


@pytest.mark.parametrize("command, kind", [("suite", "suite"), ("search", "study")])
def test_a_spec_file_that_cannot_be_read_is_one_line_and_exit_2(command, kind, tmp_path, capsys):
    missing = tmp_path / "nonexistent.toml"
    with pytest.raises(SystemExit) as exit_:
        main([command, str(missing)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err == f"bench: error: {missing}: cannot read {kind} file: No such file or directory\n"


def test_quiet_keeps_mlflows_info_lines_out(monkeypatch, capsys):
    monkeypatch.setenv("BENCH_SYSTEM_METRICS", "1")  # an earlier --no-system-metrics leaves it at 0
    monkeypatch.delenv("MLFLOW_LOGGING_LEVEL", raising=False)
    run = ["train", "--variant", "softmax", "--dataset", "mnist", "--epochs", "1", "--max-train-samples", "256",
           "--no-log-model", "--no-checkpoint"]
    assert main(run) == 0
    loud = capsys.readouterr().err
    # Without --quiet MLflow's system-metrics monitor says so: the check below would see it.
    assert "INFO mlflow.system_metrics" in loud and "Started monitoring system metrics" in loud
    assert main([*run, "--quiet"]) == 0
    quiet = capsys.readouterr().err
    assert "mlflow.system_metrics" not in quiet and "INFO mlflow" not in quiet, quiet
    assert os.environ.get("MLFLOW_LOGGING_LEVEL") is None  # restored for whatever runs next in-process
