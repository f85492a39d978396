"""The search's winner confirmed over fresh seeds, judged, measured on test once, and registered."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from bench import tracking
from bench.search import load_study, run_search

STUDY = """\
[study]
name = "{name}"
dataset = "mnist"
variant = "lenet"
epochs = {epochs}
n_trials = 3
sampler_seed = 0
pruner = "none"

[training]
max_train_samples = {samples}
batch_size = 100
optimizer = "momentum"

[space]
lr = {{ low = 1e-2, high = 0.3, log = true }}
width = {{ low = 2, high = 8 }}

[confirm]
top = 2
seeds = 2
baseline = {{ variant = "softmax", label = "softmax" }}
"""


def write_study(tmp_path: Path, name: str, epochs: int = 1, samples: int = 400) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(STUDY.format(name=name, epochs=epochs, samples=samples))
    return path


def quiet(_):
    pass


@pytest.fixture(scope="module")
def confirmed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("confirm")
    spec = load_study(write_study(tmp, "confirm-basic"))
    outcome = run_search(spec, storage=str(tmp / "c.journal"), echo=quiet)
    return spec, outcome


def test_the_top_configs_and_the_baseline_get_fresh_seeds_under_the_studys_parent(confirmed):
    spec, outcome = confirmed
    result = outcome.confirmation
    study_runs = tracking.child_runs(outcome.parent_run_id)
    trial_seeds = set(study_runs[study_runs["tags.bench.kind"] == "trial"]["params.seed"].astype(int))
    assert trial_seeds == {0} and not trial_seeds & set(result.seeds) and len(result.seeds) == 2
    confirm_parent = MlflowClient().get_run(result.parent_run_id)
    assert confirm_parent.data.tags[tracking.PARENT_TAG] == outcome.parent_run_id  # nested under the study
    runs = tracking.child_runs(result.parent_run_id)
    labels = [c.label for c in result.candidates] + ["softmax"]
    assert len(result.candidates) == 2
    for label in labels:
        mine = runs[runs["tags.bench.label"] == label]
        assert sorted(mine["params.seed"].astype(int)) == result.seeds and set(mine["status"]) == {"FINISHED"}
    for candidate in result.candidates:  # each candidate trains at its trial's params
        mine = runs[runs["tags.bench.label"] == candidate.label]
        assert mine["params.lr"].astype(float).tolist() == pytest.approx([candidate.params["lr"]] * 2)
        assert set(mine["params.knob.width"].astype(int)) == {candidate.params["width"]}


def test_verdicts_judge_the_configs_against_the_baseline_and_the_winner(confirmed):
    _, outcome = confirmed
    result = outcome.confirmation
    summary = result.summary.set_index("label")
    for candidate in result.candidates:
        assert summary.loc[candidate.label, "verdict_kind"] in ("better", "worse", "equivalent", "undecided")
        assert summary.loc[candidate.label, "verdict"]
    assert summary.loc["softmax", "verdict"] == "baseline"
    means = {c.label: summary.loc[c.label, "val_acc_mean"] for c in result.candidates}
    assert result.winner.label == max(means, key=means.get)  # chosen on the confirmed val mean
    versus = result.versus_winner.set_index("label")
    assert versus.loc[result.winner.label, "verdict"] == "baseline"
    assert set(versus.index) == {c.label for c in result.candidates}


def test_the_champion_is_a_confirmation_run_of_the_winner_linked_to_its_trial(confirmed):
    spec, outcome = confirmed
    result = outcome.confirmation
    client = MlflowClient()
    champion = client.get_model_version_by_alias(f"{spec.name}-best", "champion")
    run = client.get_run(champion.run_id)
    assert run.data.tags[tracking.PARENT_TAG] == result.parent_run_id
    assert run.data.tags["bench.label"] == result.winner.label
    assert run.data.tags["bench.proposed_by_trial"] == str(result.winner.trial)
    assert run.data.tags["bench.proposed_by_trial_run"] == result.winner.run_id
    assert tracking.load_model(champion.run_id) is not None


def test_test_is_touched_once_after_selection_and_only_for_the_winner(confirmed):
    _, outcome = confirmed
    result = outcome.confirmation
    client = MlflowClient()
    study_runs = tracking.child_runs(outcome.parent_run_id)
    trials = study_runs[study_runs["tags.bench.kind"] == "trial"]
    assert "metrics.test_acc" not in trials or trials["metrics.test_acc"].isna().all()
    runs = tracking.child_runs(result.parent_run_id)
    winner = runs[runs["tags.bench.label"] == result.winner.label]
    others = runs[runs["tags.bench.label"] != result.winner.label]
    assert others["metrics.test_acc"].isna().all()  # not the runners-up, not the baseline
    assert winner["metrics.test_acc"].notna().all() and set(winner["tags.bench.test_after_selection"]) == {"true"}
    # measured after every confirmation run had ended, i.e. after the winner was chosen on val
    last_end = runs["end_time"].max()
    for run_id in winner["run_id"]:
        [measured] = client.get_metric_history(run_id, "test_acc")
        assert pd.Timestamp(measured.timestamp, unit="ms", tz="UTC") >= last_end
    assert result.test["n"] == 2 and result.test["mean"] == pytest.approx(winner["metrics.test_acc"].mean())


def test_the_study_report_shows_the_honest_picture(confirmed, tmp_path):
    from bench.report import build_report

    spec, outcome = confirmed
    page = (build_report(spec.name, tmp_path, log=False).out_dir / "index.html").read_text()
    result = outcome.confirmation
    assert "The winner, confirmed" in page and f"Winner: {result.winner.label}" in page
    assert "gap, pt" in page and "measured once after it was chosen" in page
    for candidate in result.candidates:
        assert f"{candidate.value:.4f}" in page
    if not result.beats_baseline:
        assert "No config of this search beats the baseline" in page
    assert "a confirmation run of the winner" in page


def test_a_killed_confirmation_resumes_without_repeating_finished_pairs(tmp_path):
    spec = load_study(write_study(tmp_path, "confirm-kill", epochs=5, samples=3000))
    storage = str(tmp_path / "k.journal")
    command = [sys.executable, "-m", "bench", "search", str(spec.path), "--storage", storage, "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=tmp_path)
    client = MlflowClient()
    victim = None
    deadline = time.monotonic() + 240
    try:
        while victim is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.3)
            experiment = client.get_experiment_by_name(spec.name)
            if experiment is None:
                continue
            for run in client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'"):
                tags = run.data.tags
                if tags.get("bench.kind") == "run" and tags.get(tracking.TAG_CHECKPOINT_EPOCH):
                    victim = run
                    os.kill(proc.pid, signal.SIGKILL)  # mid-run, after a checkpoint, during the confirmation
                    break
        assert victim is not None, "never caught a confirmation run after a checkpoint"
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    finished_before = tracking.child_runs(victim.data.tags[tracking.PARENT_TAG])
    finished_before = set(finished_before[finished_before["status"] == "FINISHED"]["run_id"])
    again = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    runs = tracking.child_runs(victim.data.tags[tracking.PARENT_TAG])
    pairs = list(zip(runs["tags.bench.label"], runs["tags.bench.seed"]))
    assert len(pairs) == len(set(pairs)) == 6 and set(runs["status"]) == {"FINISHED"}  # each pair once
    assert finished_before <= set(runs["run_id"])  # nothing finished was trained again
    resumed = client.get_run(victim.info.run_id)
    assert resumed.info.status == "FINISHED"  # the killed pair continued in its own run
    assert [m.step for m in client.get_metric_history(victim.info.run_id, "val_acc")] == list(range(1, 6))
