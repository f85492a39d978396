"""Small studies on tiny data: trials, pruning, resume, several workers, a killed worker, MLflow structure."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from bench import tracking
from bench.search import Objective, SearchError, load_study, load_study_data, open_study, run_search

REPO = Path(__file__).resolve().parents[1]

STUDY = """\
[study]
name = "{name}"
dataset = "mnist"
variant = "lenet"
epochs = {epochs}
n_trials = 4
sampler_seed = 0
pruner = "{pruner}"

[pruner]
n_startup_trials = 1
n_warmup_steps = 0

[training]
max_train_samples = {samples}
batch_size = 100
optimizer = "momentum"

[space]
lr = {{ low = 1e-3, high = 0.3, log = true }}
width = {{ low = 2, high = 8 }}
dropout = {{ low = 0.0, high = 0.5 }}
"""


def write_study(tmp_path: Path, name: str, epochs: int = 2, pruner: str = "none", samples: int = 300) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(STUDY.format(name=name, epochs=epochs, pruner=pruner, samples=samples))
    return path


def quiet(_):
    pass


@pytest.mark.parametrize("path", sorted((REPO / "studies").glob("*_search.toml")), ids=lambda p: p.name)
def test_shipped_studies_load(path):
    spec = load_study(path)
    assert spec.metric == "val_acc" and spec.direction == "maximize"
    assert {"lr", "width", "dropout"} <= set(spec.space)


def test_cifar2_search_covers_lr_width_dropout_and_depth():
    spec = load_study(REPO / "studies" / "cifar2_search.toml")
    assert set(spec.space) == {"lr", "width", "dropout", "depth"} and spec.space["lr"].log


@pytest.mark.parametrize(
    "edit, message",
    [
        (('variant = "lenet"', 'variant = "lenett"'), "unknown variant 'lenett'"),
        (('pruner = "none"', 'pruner = "sometimes"'), r":8: pruner 'sometimes'; accepted: median, hyperband, none"),
        (("width = {", "colour = {"), r":21: unknown parameter 'colour'; accepted: lr, weight_decay, width, dropout"),
        (("width = { low = 2, high = 8 }", "depth = { low = 2, high = 8 }"), r":21: variant 'lenet' has no numeric knob 'depth'"),
        (("high = 0.5", "high = 1.5"), r":22: dropout=.* is out of range"),
        (("low = 1e-3", "low = 0.0"), r":20: need 0 < low < high for lr"),
        (("n_trials = 4", "n_trials = 0"), r":6: n_trials must be >= 1"),
        (("batch_size = 100", "batch_size = 100\nval_from_test = true"), r":17: val_from_test = true would make the search select on the test split"),
    ],
)
def test_bad_study_file_names_the_line(tmp_path, edit, message):
    text = STUDY.format(name="bad", epochs=1, pruner="none", samples=100)
    assert edit[0] in text
    path = tmp_path / "bad.toml"
    path.write_text(text.replace(*edit, 1))
    with pytest.raises(SearchError, match=message):
        load_study(path)


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    spec = load_study(write_study(tmp, "search-basic"))
    storage = str(tmp / "basic.journal")
    outcome = run_search(spec, storage=storage, echo=quiet)
    return spec, storage, outcome


def test_trials_are_created_and_counted(finished_study):
    spec, storage, outcome = finished_study
    study = open_study(spec, storage)
    trials = study.get_trials()
    assert len(trials) == 4 and {t.state for t in trials} == {TrialState.COMPLETE}
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 4
    assert outcome.best_value == max(t.value for t in trials)
    assert outcome.epochs_trained == 8


def test_mlflow_parent_child_structure(finished_study):
    spec, storage, outcome = finished_study
    study = open_study(spec, storage)
    assert study.user_attrs["mlflow_parent_run_id"] == outcome.parent_run_id
    children = tracking.child_runs(outcome.parent_run_id)
    trials = children[children["tags.bench.kind"] == "trial"].sort_values("tags.optuna.trial_number")
    assert list(trials["tags.optuna.trial_number"]) == ["0", "1", "2", "3"]
    assert set(trials["status"]) == {"FINISHED"} and set(trials["tags.optuna.state"]) == {"COMPLETE"}
    for trial in study.get_trials():
        row = trials[trials["tags.optuna.trial_number"] == str(trial.number)].iloc[0]
        assert row["run_id"] == trial.user_attrs["mlflow_run_id"]
        assert float(row["params.lr"]) == pytest.approx(trial.params["lr"])
        assert float(row["metrics.val_acc"]) == pytest.approx(trial.value)
    parent = MlflowClient().get_run(outcome.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_val_acc"] == pytest.approx(outcome.best_value)
    assert float(parent.data.tags["best.lr"]) == pytest.approx(outcome.best_params["lr"])
    assert {"search-basic.toml", "best_params.json", "trials.json", "param_importances.json"} <= set(
        tracking.list_artifacts(outcome.parent_run_id)
    )


def test_trials_log_no_model_and_without_confirmation_no_champion_is_registered(finished_study):
    spec, _, outcome = finished_study
    children = tracking.child_runs(outcome.parent_run_id)
    trial_runs = children[children["tags.bench.kind"] == "trial"]
    assert all(tracking.logged_models(run_id) == [] for run_id in trial_runs["run_id"])
    assert "metrics.test_acc" not in trial_runs or trial_runs["metrics.test_acc"].isna().all()  # trials never see test
    assert outcome.confirmation is None and tracking.registered_versions("search-basic-best") == []


def test_resume_keeps_earlier_trials_and_counts_the_total(tmp_path):
    spec = load_study(write_study(tmp_path, "search-resume"))
    storage = str(tmp_path / "resume.journal")
    first = run_search(spec, storage=storage, n_trials=2, register_best=False, echo=quiet)
    before = [(t.number, t.params, t.value) for t in open_study(spec, storage).get_trials()]
    again = run_search(spec, storage=storage, n_trials=3, register_best=False, echo=quiet)
    after = [(t.number, t.params, t.value) for t in open_study(spec, storage).get_trials()]
    assert len(before) == 2 and after[:2] == before and len(after) == 3
    assert again.parent_run_id == first.parent_run_id
    assert run_search(spec, storage=storage, n_trials=3, register_best=False, echo=quiet).n_trials == 3


def test_a_pruner_that_must_fire_prunes_and_the_run_says_so(tmp_path):
    spec = load_study(write_study(tmp_path, "search-prune", epochs=3))
    experiment_id = tracking.experiment_id_for("search-prune", "search-prune")
    parent = tracking.create_run(experiment_id, "parent", {})
    # val_acc can never reach 1.1, so every trial is pruned at its first report.
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=1.1))
    study.optimize(Objective(spec, parent, load_study_data(spec)), n_trials=2)
    assert [t.state for t in study.trials] == [TrialState.PRUNED, TrialState.PRUNED]
    assert all(list(t.intermediate_values) == [1] for t in study.trials)
    for trial in study.trials:
        run = MlflowClient().get_run(trial.user_attrs["mlflow_run_id"])
        assert run.info.status == "FINISHED" and run.data.tags["optuna.state"] == "PRUNED"
        assert [m.step for m in MlflowClient().get_metric_history(run.info.run_id, "val_acc")] == [1]


def test_median_pruning_in_a_study_file(tmp_path):
    spec = load_study(write_study(tmp_path, "search-median", epochs=3, pruner="median"))
    outcome = run_search(spec, storage=str(tmp_path / "m.journal"), n_trials=6, register_best=False, echo=quiet)
    assert outcome.n_trials == 6 and outcome.states.get("PRUNED", 0) >= 1
    assert outcome.epochs_trained < 6 * 3


def test_two_worker_processes_make_exactly_n_distinct_trials(tmp_path):
    spec = load_study(write_study(tmp_path, "search-workers"))
    storage = str(tmp_path / "workers.journal")
    outcome = run_search(spec, storage=storage, n_trials=5, workers=2, register_best=False, echo=quiet)
    trials = open_study(spec, storage).get_trials()
    seen = [(t.number, t.state.name, t.user_attrs.get("fail_reason")) for t in trials]
    assert len(trials) == 5 and outcome.n_trials == 5, seen
    assert sorted(t.number for t in trials) == [0, 1, 2, 3, 4]
    assert {t.state for t in trials} == {TrialState.COMPLETE}
    assert len({t.user_attrs["pid"] for t in trials}) == 2  # both workers did work
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 5
    children = tracking.child_runs(outcome.parent_run_id)
    assert len(children[children["tags.bench.kind"] == "trial"]) == 5


def test_a_worker_killed_mid_trial_loses_nothing_finished_and_its_trial_is_failed(tmp_path):
    spec = load_study(write_study(tmp_path, "search-kill", epochs=6, samples=3000))
    storage = str(tmp_path / "kill.journal")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "search", str(spec.path), "--storage", storage, "--n-trials", "3",
         "--no-register", "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 180
    study = None
    try:
        while time.monotonic() < deadline:
            time.sleep(0.2)
            if not Path(storage).exists():
                continue
            study = open_study(spec, storage)
            states = [t.state for t in study.get_trials()]
            running = [t for t in study.get_trials() if t.state == TrialState.RUNNING and "mlflow_run_id" in t.user_attrs]
            if TrialState.COMPLETE in states and running:
                break
        else:
            pytest.fail("the worker never had a finished and a running trial at once")
        finished = [(t.number, t.value) for t in study.get_trials() if t.state == TrialState.COMPLETE]
        victim = running[0]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    study = open_study(spec, storage)
    assert [(t.number, t.value) for t in study.get_trials() if t.state == TrialState.COMPLETE] == finished
    assert study.trials[victim.number].state == TrialState.RUNNING  # until someone recovers it

    run_search(spec, storage=storage, n_trials=3, register_best=False, echo=quiet)  # recovery = run it again
    trials = open_study(spec, storage).get_trials()
    assert trials[victim.number].state == TrialState.FAIL
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 3
    assert [(t.number, t.value) for t in trials if t.number in dict(finished)] == finished
    killed_run = MlflowClient().get_run(victim.user_attrs["mlflow_run_id"])
    assert killed_run.info.status == "FAILED" and "died" in killed_run.data.tags[tracking.TAG_ERROR]


def test_postgresql_storage_with_two_workers(tmp_path):
    url = os.environ.get("BENCH_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI must start PostgreSQL and set BENCH_TEST_POSTGRES_URL (see .ci/run)")
        pytest.skip("set BENCH_TEST_POSTGRES_URL=postgresql://user:pass@127.0.0.1/db (CI does)")
    name = f"search-pg-{os.getpid()}-{int(time.time())}"
    spec = load_study(write_study(tmp_path, name))
    outcome = run_search(spec, storage=url, n_trials=4, workers=2, register_best=False, echo=quiet)
    trials = open_study(spec, url).get_trials()
    assert len(trials) == 4 and {t.state for t in trials} == {TrialState.COMPLETE}
    assert len({t.user_attrs["pid"] for t in trials}) == 2
    parent = MlflowClient().get_run(outcome.parent_run_id)
    assert url.split("@")[0].split(":")[-1] not in str(parent.data.params) + str(parent.data.tags)  # no password


def test_retest_without_the_confirmation_is_refused_before_any_trial(tmp_path, capsys):
    from bench.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["search", str(write_study(tmp_path, "retest-alone")), "--retest"])
    assert exit_.value.code == 2
    assert "bench: error: --retest needs the confirmation (a [confirm] table or --confirm)" in capsys.readouterr().err
    assert not (tmp_path / "optuna").exists() and not Path("optuna/retest-alone.journal").exists()


def test_an_unconfirmed_search_prints_its_one_seed_best_as_not_confirmed():
    from types import SimpleNamespace

    from bench.cli.search import best_lines

    outcome = SimpleNamespace(best_trial=3, best_value=0.8125, best_params={"lr": 0.01}, confirmation=None)
    assert best_lines(outcome, "val_acc") == ["best: trial 3, val_acc 0.8125 (one seed, not confirmed), params "
                                              "{'lr': 0.01}"]
