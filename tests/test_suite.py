import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from bench import tracking
from bench.cli import main
from bench.suites import SuiteError, SuiteFailed, load_suite, parse_suite, run_suite, run_suite_workers

REPO = Path(__file__).resolve().parents[1]

TINY = """\
[suite]
name = "{name}"
dataset = "mnist"
seeds = [0, 1]

[defaults]
max_train_samples = 300
batch_size = 50

[profiles.quick]
epochs = 1

[profiles.full]
epochs = 2

[[variants]]
variant = "softmax"

[[variants]]
variant = "lenet"
label = "lenet-narrow"
knobs = {{ width = 4 }}
[variants.profiles.full]
epochs = 3
"""


def write_suite(tmp_path: Path, name: str, text: str = TINY) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text.format(name=name))
    return path


SUITES = sorted(p for p in (REPO / "studies").glob("*.toml") if not p.name.endswith("_search.toml"))


def test_the_three_promised_suites_ship():
    assert {p.name for p in SUITES} >= {"cifar2_chapter8.toml", "mnist_seeds.toml", "fashion_mnist.toml"}


@pytest.mark.parametrize("path", SUITES, ids=lambda p: p.name)
def test_every_shipped_suite_loads_and_plans_every_profile(path):
    suite = load_suite(path)
    for profile in suite.profiles:
        plan = suite.plan(profile)
        assert len(plan) == len(suite.rows) * len(suite.profiles[profile].get("seeds", suite.seeds))


def test_chapter8_suite_is_the_books_table():
    suite = load_suite(REPO / "studies" / "cifar2_chapter8.toml")
    assert [r.label for r in suite.rows] == [
        "net", "net-width", "net-l2", "net-weight-decay", "net-dropout", "net-batchnorm", "net-depth", "net-res",
        "net-res-deep",
    ]
    full = {row.label: config for row, config in suite.plan("full")}
    assert all(c.epochs == 100 and c.batch_size == 64 and c.optimizer == "sgd" and c.val_from_test for c in full.values())
    assert full["net"].lr == 1e-2 and full["net-res-deep"].lr == 3e-3 and full["net-res-deep"].knobs["depth"] == 100
    assert full["net-l2"].l2 == 1e-3
    quick = {row.label: config for row, config in suite.plan("quick")}
    assert quick["net-res-deep"].knobs["depth"] == 10


def test_the_chapters_full_profile_judges_the_moving_average_and_quick_the_last_k_mean():
    suite = load_suite(REPO / "studies" / "cifar2_chapter8.toml")
    assert suite.at_profile("full").measure == "val_acc_ema" and suite.at_profile("quick").measure == "val_acc_last_k"
    assert all(c.ema_decay > 0 for _, c in suite.plan("full"))


PROFILE_MEASURE = TINY.replace("[profiles.quick]\nepochs = 1\n",
                               '[profiles.quick]\nepochs = 1\nmeasure = "val_acc"\ndesign = "unpaired"\n')


def test_a_profiles_measure_and_design_win_over_the_suites_and_are_not_training_settings(tmp_path):
    text = PROFILE_MEASURE.replace('seeds = [0, 1]', 'seeds = [0, 1]\nmeasure = "val_acc_ema"')
    suite = load_suite(write_suite(tmp_path, "profile-measure", text))
    assert (suite.measure, suite.design) == ("val_acc_ema", "paired")
    quick, full = suite.at_profile("quick"), suite.at_profile("full")
    assert (quick.measure, quick.design) == ("val_acc", "unpaired")
    assert (full.measure, full.design) == ("val_acc_ema", "paired")
    assert [c.epochs for _, c in suite.plan("quick")] == [1, 1, 1, 1]  # measure is no TrainConfig field
    with pytest.raises(SuiteError, match="unknown profile 'medium'; accepted: quick, full"):
        suite.at_profile("medium")


@pytest.mark.parametrize("edit, message", [
    (('measure = "val_acc"', 'measure = "test_acc"'),
     r":12: measure 'test_acc' is not accepted; accepted: val_acc, val_acc_last_k, val_acc_ema"),
    (('design = "unpaired"', 'design = "welch"'), r":13: design 'welch' is not accepted; accepted: paired, unpaired"),
    (('measure = "val_acc"', 'measure = "val_acc_ema"\nema_decay = 0.0'),
     r":12: measure 'val_acc_ema' needs the moving average, but profile 'quick' sets ema_decay = 0"),
])
def test_a_bad_profile_measure_or_design_names_its_line(tmp_path, edit, message):
    text = PROFILE_MEASURE.replace(*edit)
    assert text != PROFILE_MEASURE
    with pytest.raises(SuiteError, match=message):
        load_suite(write_suite(tmp_path, "bad-profile-measure", text))


def test_a_profiles_measure_is_what_its_run_judges_records_and_reports(tmp_path, monkeypatch):
    import matplotlib.axes

    from bench.report import build_report
    from bench.suites.diff import resolve

    text = PROFILE_MEASURE.replace('seeds = [0, 1]', 'seeds = [0, 1]\nbaseline = "softmax"')
    suite = load_suite(write_suite(tmp_path, "profile-measure-run", text))
    assert suite.measure == "val_acc_last_k"  # the suite's default; quick judges val_acc
    outcome = run_suite(suite, "quick", log_models=False, progress=False, echo=lambda _: None)
    assert (outcome.summary.attrs["measure"], outcome.summary.attrs["design"]) == ("val_acc", "unpaired")
    tags = MlflowClient().get_run(outcome.parent_run_id).data.tags
    assert "; measure val_acc; unpaired;" in tags["bench.seeds_design"]
    lenet = outcome.summary.set_index("label").loc["lenet-narrow"]
    assert lenet["test"] == "Welch"
    # Read back from the parent run: the report and bench diff judge as the run did, and its forest
    # plot's axis names that measure.
    xlabels = []
    monkeypatch.setattr(matplotlib.axes.Axes, "set_xlabel", lambda ax, text, *a, **k: xlabels.append(text))
    built = build_report(outcome.parent_run_id, tmp_path / "out", log=False)
    assert any(x.startswith("val accuracy after the last epoch minus softmax's, points") for x in xlabels), xlabels
    written = pd.read_csv(tmp_path / "out" / "summary.csv").set_index("variant_row")
    assert set(written["measure"].dropna()) == {"val_acc"} and set(written["design"].dropna()) == {"unpaired"}
    assert built.summary.set_index("label").loc["lenet-narrow", "measure_mean"] == pytest.approx(lenet["measure_mean"])
    side = resolve(outcome.parent_run_id)
    assert (side.suite.measure, side.suite.design) == ("val_acc", "unpaired")


def test_layers_override_in_order(tmp_path):
    suite = load_suite(write_suite(tmp_path, "layers"))
    plan = suite.plan("full", seeds=[3], overrides={"epochs": 7, "device": "cpu"})
    assert [(r.label, c.epochs, c.seed, c.knobs.get("width"), c.batch_size) for r, c in plan] == [
        ("softmax", 7, 3, None, 50),
        ("lenet-narrow", 7, 3, 4, 50),
    ]
    plan = suite.plan("full")
    assert [c.epochs for _, c in plan] == [2, 2, 3, 3]


@pytest.mark.parametrize(
    "edit, message",
    [
        (("epochs = 1", "epoch = 1"), r":11: unknown key 'epoch' in \[profiles.quick\]; accepted: .*epochs"),
        (('variant = "softmax"', 'variant = "sofmax"'), r":17: unknown variant 'sofmax'; accepted: net"),
        (("[variants.profiles.full]", "[variants.profiles.fast]"), r":23: unknown profile 'fast'; accepted: quick, full"),
        (("width = 4", "colour = 4"), r":22: variant 'lenet' has no knob 'colour'; accepted knobs: width, dropout"),
        (('dataset = "mnist"', 'dataset = "svhn"'), r":3: unknown data set 'svhn'"),
        (("seeds = [0, 1]", "seeds = []"), r":4: seeds must be a non-empty list"),
        (("batch_size = 50", 'batch_size = "big"'), r":8: batch_size must be a int"),
        (("batch_size = 50", "batch_size = 0"), r"batch_size=0 is not accepted"),
        (("[suite]", "[suit]"), r":1: unknown key 'suit' in the top level"),
        (("epochs = 1", "epochs = 1\nepochs = 2"), r"not valid TOML"),
    ],
)
def test_a_bad_suite_file_fails_before_training_naming_the_line(tmp_path, edit, message, monkeypatch):
    import bench.train

    monkeypatch.setattr(bench.train, "train", lambda *a, **k: pytest.fail("training started"))
    text = TINY.replace(*edit)
    assert text != TINY
    path = write_suite(tmp_path, "bad", text)
    with pytest.raises(SuiteError, match=message):
        load_suite(path)


def test_unknown_profile_on_the_command_line_exits_2(tmp_path, capsys):
    path = write_suite(tmp_path, "cli-profile")
    with pytest.raises(SystemExit) as exit_:
        main(["suite", str(path), "--profile", "medium"])
    assert exit_.value.code == 2
    assert "unknown profile 'medium'; accepted: quick, full" in capsys.readouterr().err


def children_of(parent_id: str):
    return tracking.child_runs(parent_id).sort_values("start_time")


def test_suite_makes_one_parent_and_a_child_per_row_and_seed(tmp_path):
    suite = load_suite(write_suite(tmp_path, "structure"))
    outcome = run_suite(suite, "quick", log_models=False, progress=False, echo=lambda _: None)
    children = children_of(outcome.parent_run_id)
    assert sorted(zip(children["tags.bench.label"], children["tags.bench.seed"])) == [
        ("lenet-narrow", "0"), ("lenet-narrow", "1"), ("softmax", "0"), ("softmax", "1"),
    ]
    assert set(children["status"]) == {"FINISHED"}
    parent = MlflowClient().get_run(outcome.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["bench.suite"] == "structure"
    assert set(children["experiment_id"]) == {parent.info.experiment_id}
    artifacts = {a.path for a in MlflowClient().list_artifacts(outcome.parent_run_id)}
    assert {"structure.toml", "summary.csv", "summary.txt"} <= artifacts
    # The summary's mean and std are those of the children's final metrics.
    summary = outcome.summary.set_index("label")
    lenet = children[children["tags.bench.label"] == "lenet-narrow"]["metrics.val_acc"]
    assert summary.loc["lenet-narrow", "val_acc_mean"] == pytest.approx(lenet.mean())
    assert summary.loc["lenet-narrow", "val_acc_std"] == pytest.approx(lenet.std())
    assert summary.loc["lenet-narrow", "n_seeds"] == 2 and summary.loc["softmax", "num_parameters"] == 7850


def test_resume_skips_finished_children(tmp_path):
    suite = load_suite(write_suite(tmp_path, "resume"))
    first = run_suite(suite, "quick", seeds=[0], log_models=False, progress=False, echo=lambda _: None)
    again = run_suite(suite, "quick", seeds=[0, 1], resume=True, log_models=False, progress=False, echo=lambda _: None)
    assert again.parent_run_id == first.parent_run_id
    assert (again.ran, again.skipped) == (2, 2)
    children = children_of(first.parent_run_id)
    assert len(children) == 4 and set(children["status"]) == {"FINISHED"}
    assert list(again.summary["n_seeds"]) == [2, 2]


def test_resume_marks_children_left_running_by_a_dead_process_failed(tmp_path):
    suite = load_suite(write_suite(tmp_path, "stale"))
    first = run_suite(suite, "quick", seeds=[0], log_models=False, progress=False, echo=lambda _: None)
    client = MlflowClient()
    parent = client.get_run(first.parent_run_id)
    orphan = client.create_run(
        parent.info.experiment_id,
        tags={tracking.PARENT_TAG: first.parent_run_id, tracking.TAG_LABEL: "softmax", tracking.TAG_SEED: "1"},
    ).info.run_id  # as if SIGKILLed mid-run: RUNNING forever
    again = run_suite(suite, "quick", seeds=[0, 1], resume=True, log_models=False, progress=False, echo=lambda _: None)
    assert client.get_run(orphan).info.status == "FAILED"
    assert "stale" in client.get_run(orphan).data.tags[tracking.TAG_ERROR]
    assert again.ran == 2


def test_a_failing_child_is_failed_the_others_finish_and_the_parent_fails(tmp_path):
    text = TINY.replace('variant = "softmax"', 'variant = "mlp"\nlr = 1e12')
    suite = load_suite(write_suite(tmp_path, "failing", text))
    with pytest.raises(SuiteFailed) as err:
        run_suite(suite, "quick", log_models=False, progress=False, echo=lambda _: None)
    children = children_of(err.value.parent_run_id)
    status = dict(zip(children["tags.bench.label"] + "/" + children["tags.bench.seed"], children["status"]))
    assert status == {"mlp/0": "FAILED", "mlp/1": "FAILED", "lenet-narrow/0": "FINISHED", "lenet-narrow/1": "FINISHED"}
    assert MlflowClient().get_run(err.value.parent_run_id).info.status == "FAILED"
    # The failed row is listed, its failures counted with their reason, and it gets no verdict.
    summary = err.value.summary.set_index("label")
    assert list(summary.index) == ["mlp", "lenet-narrow"]
    assert summary.loc["mlp", ["runs", "n_seeds", "failed", "diverged"]].tolist() == [2, 0, 2, 0]
    assert summary.loc["mlp", "verdict"] == "not judged: 2 of 2 runs failed"
    assert summary.loc["mlp", "failures"].startswith("seeds 0, 1: NonFiniteLossError: loss became nan")
    assert summary.loc["lenet-narrow", ["runs", "n_seeds", "failed"]].tolist() == [2, 2, 0]


def test_suite_cli_prints_the_summary_in_100_columns(tmp_path, capfd):
    path = write_suite(tmp_path, "cli-with-a-suite-name-long-enough-to-wrap")
    assert main(["suite", str(path), "--seeds", "2", "--no-log-model", "--no-system-metrics"]) == 0
    out, err = capfd.readouterr()
    err = "\n".join(line for line in err.splitlines() if " mlflow" not in line)  # MLflow's own log lines
    assert "suite cli-with-a-suite-name-long-enough-to-wrap [quick]: 4 runs on mnist" in out
    assert "lenet-narrow" in out and "parent run" in out and "4 trained here" in out
    # Its runs are shorter than the last-k mean's 5 epochs: the note says the mean covers all of theirs.
    assert ("Verdicts: mean val accuracy over the last 5 epochs (all epochs of the rows that ran fewer: "
            in " ".join(out.split()))
    wide = [line for line in (out + err).splitlines() if len(line) > 100]
    assert not wide, wide


# ---------------------------------------------------------------------------- several workers


def _pairs(parent_id: str):
    children = children_of(parent_id)
    return sorted(zip(children["tags.bench.label"], children["tags.bench.seed"], children["status"]))


ACCURACY = ["label", "n_seeds", "train_acc_mean", "train_acc_std", "val_acc_mean", "val_acc_std", "test_acc_mean",
            "test_acc_std", "baseline_diff", "verdict"]


def test_two_workers_give_the_serial_summary_and_run_each_pair_once():
    suite = load_suite(REPO / "studies" / "mnist_seeds.toml")
    # One torch thread a run in both: CPU reductions (batch norm) round differently with another
    # thread count, and workers otherwise take cores/K threads each.
    settings = dict(seeds=[0, 1], overrides={"max_train_samples": 2000, "threads": 1}, log_models=False,
                    progress=False, echo=lambda _: None)
    threads = torch.get_num_threads()
    try:
        serial = run_suite(suite, "quick", experiment="mnist-seeds serial", **settings)
        parallel = run_suite_workers(suite, "quick", experiment="mnist-seeds workers", workers=2, **settings)
    finally:
        torch.set_num_threads(threads)
    pairs = _pairs(parallel.parent_run_id)
    assert pairs == _pairs(serial.parent_run_id)  # the same 8 pairs, each once, all FINISHED
    assert len(pairs) == 8 and {status for *_, status in pairs} == {"FINISHED"}
    assert parallel.summary[ACCURACY].equals(serial.summary[ACCURACY])  # same seeds, same numbers on CPU
    assert MlflowClient().get_run(parallel.parent_run_id).info.status == "FINISHED"
    # The worker processes trained (the coordinator only picks up what a dead worker left).
    pids = set(children_of(parallel.parent_run_id)["tags.bench.pid"])
    assert 1 <= len(pids) <= 2 and str(os.getpid()) not in pids
    assert (parallel.ran, parallel.skipped) == (8, 0)


def test_a_sigkilled_workers_pair_is_retried_and_continues_in_the_same_run():
    epochs = 15
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "suite", str(REPO / "studies" / "mnist_seeds.toml"), "--seeds", "2",
         "--rows", "lenet,softmax", "--epochs", str(epochs), "--max-train-samples", "2000", "--checkpoint-every", "1",
         "--workers", "2", "--no-log-model", "--quiet", "--experiment", "mnist-seeds kill"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    client = MlflowClient()
    victim = None
    deadline = time.monotonic() + 240
    try:
        while victim is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            experiment = client.get_experiment_by_name("mnist-seeds kill")
            if experiment is None:
                continue
            for run in client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'"):
                if run.data.tags.get(tracking.TAG_CHECKPOINT_EPOCH) and tracking.PARENT_TAG in run.data.tags:
                    victim = run
                    os.kill(int(run.data.tags[tracking.TAG_PID]), signal.SIGKILL)  # that worker, not the coordinator
                    break
        assert victim is not None, "no worker was ever mid-run after a checkpoint"
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert "exited with status -9" in output and "queued again" in output
    parent_id = victim.data.tags[tracking.PARENT_TAG]
    pairs = _pairs(parent_id)
    assert pairs == [("lenet", "0", "FINISHED"), ("lenet", "1", "FINISHED"),
                     ("softmax", "0", "FINISHED"), ("softmax", "1", "FINISHED")]
    # The retried pair continued inside the killed run, from its checkpoint: every epoch logged once.
    resumed = client.get_run(victim.info.run_id)
    assert resumed.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(victim.info.run_id, "val_acc")]
    assert steps == list(range(1, epochs + 1))
    assert client.get_run(parent_id).info.status == "FINISHED"


def test_a_study_of_another_plan_is_refused_and_a_finished_one_is_not_rerun(tmp_path):
    suite = load_suite(write_suite(tmp_path, "shared-study"))
    storage = str(tmp_path / "shared.journal")
    settings = dict(storage=storage, study_name="one study", log_models=False, progress=False, echo=lambda _: None)
    first = run_suite_workers(suite, "quick", seeds=[0], **settings)
    assert (first.ran, len(_pairs(first.parent_run_id))) == (2, 2)
    again = run_suite_workers(suite, "quick", seeds=[0], **settings)  # a late machine joins a finished study
    assert again.parent_run_id == first.parent_run_id and again.ran == 0 and len(_pairs(first.parent_run_id)) == 2
    with pytest.raises(SuiteError, match="holds another plan"):
        run_suite_workers(suite, "quick", seeds=[1], **settings)


def test_workers_must_be_at_least_one(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["suite", str(write_suite(tmp_path, "zero-workers")), "--workers", "0"])
    assert exit_.value.code == 2
    assert "--workers 0 is not accepted; accepted: an integer >= 1" in capsys.readouterr().err


def test_resuming_on_workers_with_more_seeds_runs_only_the_new_pairs(tmp_path):
    suite = load_suite(write_suite(tmp_path, "workers-resume"))
    # One worker in this process: the same queue and resume path as K, without K process start-ups.
    settings = dict(workers=1, log_models=False, progress=False, echo=lambda _: None)
    first = run_suite_workers(suite, "quick", seeds=[0], **settings)
    again = run_suite_workers(suite, "quick", seeds=[0, 1], resume=True, **settings)
    assert again.parent_run_id == first.parent_run_id and (again.ran, again.skipped) == (2, 2)
    assert [status for *_, status in _pairs(first.parent_run_id)] == ["FINISHED"] * 4


# ---------------------------------------------------------------------------- numbers that are what they say


def test_resuming_with_other_settings_is_refused_and_never_reported_as_finished(capsys):
    """The reproduction: 1-epoch runs, then the same command with --epochs 3 --resume, used to print
    '0 run(s) trained, 2 skipped as finished' and report the 1-epoch numbers."""
    args = ["suite", str(REPO / "studies" / "mnist_seeds.toml"), "--profile", "quick", "--rows", "softmax,mlp",
            "--max-train-samples", "1000", "--quiet", "--no-log-model", "--experiment", "resume-mixup"]
    assert main([*args, "--epochs", "1"]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--epochs", "3", "--resume"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "holds runs trained under other settings" in err and "epochs = 1 in its runs, 3 now" in err
    runs = tracking.find_runs(filter_string="tags.`bench.kind` = 'run' and tags.`bench.suite` = 'mnist-seeds'")
    assert set(runs[runs["experiment_id"] == runs["experiment_id"].iloc[0]]["params.epochs"]) == {"1"}  # nothing trained


def test_workers_get_the_storage_url_through_the_environment_not_argv(tmp_path, monkeypatch):
    import bench.suites.workers as workers_module

    started = []

    class Recorder:
        def __init__(self, cmd, env):
            started.append((cmd, env))
            self.pid = 0

        def poll(self):
            return 0

        def wait(self):
            return 0

    monkeypatch.setattr(workers_module.subprocess, "Popen", Recorder)
    url = str(tmp_path / "s3cret-password-path.journal")
    suite = load_suite(write_suite(tmp_path, "env-storage"))
    run_suite_workers(suite, "quick", seeds=[0], workers=2, storage=url, log_models=False, progress=False,
                      echo=lambda _: None)
    assert len(started) == 2
    for cmd, env in started:
        assert not any("s3cret" in arg for arg in cmd), cmd
        assert env["BENCH_STORAGE_URL"] == url


def test_each_machine_says_what_it_trained_and_what_the_suite_holds(tmp_path, capsys):
    path = write_suite(tmp_path, "counts")
    assert main(["suite", str(path), "--seeds", "1", "--no-log-model", "--quiet"]) == 0
    assert "2 trained here, 0 skipped as finished; 2 of 2 pairs finished" in capsys.readouterr().out
    assert main(["suite", str(path), "--seeds", "2", "--no-log-model", "--quiet", "--resume"]) == 0
    assert "2 trained here, 2 skipped as finished; 4 of 4 pairs finished" in capsys.readouterr().out


def test_the_method_note_says_when_a_rows_last_k_mean_covers_all_its_epochs():
    from bench.suites.summary import method_text, summarize

    text = "[suite]\nname = 'short'\ndataset = 'mnist'\nbaseline = 'lenet'\n[profiles.quick]\n" + "".join(
        f"[[variants]]\nvariant = '{v}'\n" for v in ("lenet", "softmax"))
    suite = parse_suite(text, "short.toml", check_variants=False)
    rows = [{"tags.bench.label": label, "seed": seed, "pair_state": "finished", "pair_reason": "", "status": "FINISHED",
             "run_id": f"{label}{seed}", "metrics.val_acc_last_k": 0.9 + seed / 100, "metrics.val_acc": 0.9,
             "params.last_k": "5", "params.epochs": str(epochs), "start_time": pd.Timestamp(0),
             "end_time": pd.Timestamp(1)} for label, epochs in (("lenet", 9), ("softmax", 2)) for seed in range(3)]
    note = method_text(summarize(pd.DataFrame(rows), suite))
    assert "mean val accuracy over the last 5 epochs (all epochs of the rows that ran fewer: softmax 2)" in note


def test_at_profile_resolves_from_the_suite_table_whatever_profile_came_before(tmp_path):
    suite = load_suite(write_suite(tmp_path, "twice", PROFILE_MEASURE))
    assert suite.at_profile("quick").at_profile("full").measure == "val_acc_last_k"
    assert suite.at_profile("full").at_profile("quick").at_profile("full").design == "paired"
