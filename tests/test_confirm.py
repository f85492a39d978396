"""The search's winner confirmed over fresh seeds on a fresh split, judged, measured on test once per
study, and registered only when it holds against the baseline."""

from __future__ import annotations

import contextlib
import dataclasses
import html
import io
import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from bench import tracking
from bench.cli import main
from bench.search import load_study, run_search
from bench.verdicts import against_baseline

STUDY = """\
[study]
name = "{name}"
dataset = "mnist"
variant = "lenet"
epochs = {epochs}
n_trials = {n_trials}
sampler_seed = 0
pruner = "none"

[training]
max_train_samples = {samples}
val_fraction = {val_fraction}
batch_size = {batch}
optimizer = "momentum"

[space]
lr = {{ low = {lr[0]}, high = {lr[1]}, log = true }}
width = {{ low = {width[0]}, high = {width[1]} }}

[confirm]
top = {top}
seeds = {seeds}
baseline = {baseline}
"""
SOFTMAX = '{ variant = "softmax", label = "softmax" }'
# A baseline that cannot learn in one epoch: every decent candidate is better than it, whatever the seeds.
STALLED = '{ variant = "lenet", lr = 1e-6, label = "stalled lenet" }'


def write_study(tmp_path: Path, name: str, *, epochs: int = 1, samples: int = 400, batch: int = 100, n_trials: int = 3,
                lr=(1e-2, 0.3), width=(2, 8), top: int = 2, seeds: int = 2, baseline: str = SOFTMAX,
                val_fraction: float = 0.1) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(STUDY.format(name=name, epochs=epochs, samples=samples, batch=batch, n_trials=n_trials, lr=lr,
                                 width=width, top=top, seeds=seeds, baseline=baseline, val_fraction=val_fraction))
    return path


def quiet(_):
    pass


def cli(argv: list[str]) -> list[str]:
    """``bench ARGV`` in this process; the lines it printed (it must succeed)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    assert code == 0, out.getvalue()[-3000:]
    return out.getvalue().splitlines()


def study_record(parent_id: str) -> dict:
    return json.loads(tracking.read_artifact_text(parent_id, "confirmation.json"))


def measurements(client, parent_id: str) -> dict[str, int]:
    """How many times each confirmation run's test accuracy was measured."""
    return {run_id: len(client.get_metric_history(run_id, "test_acc"))
            for run_id in tracking.child_runs(parent_id)["run_id"]}


def text_of(page: str) -> str:
    """The page's text with its line breaks and runs of spaces as single spaces."""
    return " ".join(page.split())


def said(lines: list[str]) -> str:
    """Printed lines as one text, undoing their wrapping to the terminal."""
    return text_of(" ".join(lines))


@pytest.fixture(scope="module")
def confirmed(tmp_path_factory):
    """Decent candidates (lenet, 40 steps at lr 0.03-0.08) against a baseline that cannot learn: the
    winner is better than the baseline at 3 seeds, so it becomes the champion."""
    tmp = tmp_path_factory.mktemp("confirm")
    spec = load_study(write_study(tmp, "confirm-basic", n_trials=2, batch=10, lr=(0.03, 0.08), width=(6, 8),
                                  seeds=3, baseline=STALLED, val_fraction=0.02))
    outcome = run_search(spec, storage=str(tmp / "c.journal"), echo=quiet)
    return spec, outcome


@pytest.fixture(scope="module")
def rejected(confirmed, tmp_path_factory):
    """Candidates forced to a useless lr (1e-6) against softmax at its own settings: the winner is
    worse than the baseline. An earlier champion is planted first; then the study is re-run with one
    more trial, and once more with --retest. What each step left is kept for the tests."""
    tmp = tmp_path_factory.mktemp("confirm-worse")
    path = write_study(tmp, "confirm-worse", batch=20, n_trials=2, lr=(1e-6, 2e-6), top=1, val_fraction=0.02)
    spec, storage, client = load_study(path), str(tmp / "w.journal"), MlflowClient()
    name = f"{spec.name}-best"
    planted = tracking.register_champion(confirmed[1].confirmation.champion_run_id, name)
    steps = types.SimpleNamespace(spec=spec, name=name, planted=planted)
    lines: list[str] = []
    steps.first = run_search(spec, storage=storage, echo=lambda text: lines.extend(text.splitlines()))
    confirm_id = steps.first.confirmation.parent_run_id
    steps.first_lines = lines
    steps.first_record = study_record(steps.first.parent_run_id)
    steps.first_versions = [str(v.version) for v in client.search_model_versions(f"name = '{name}'")]
    steps.first_alias = str(client.get_model_version_by_alias(name, "champion").version)
    steps.first_counts = measurements(client, confirm_id)
    steps.first_tag = json.loads(tracking.get_run(steps.first.parent_run_id).data.tags["bench.test_measured"])
    command = ["search", str(path), "--storage", storage, "--quiet", "--n-trials", "3"]
    steps.more_lines = cli(command)
    steps.more_record = study_record(steps.first.parent_run_id)
    steps.more_counts = measurements(client, confirm_id)
    steps.more_tag = json.loads(tracking.get_run(steps.first.parent_run_id).data.tags["bench.test_measured"])
    steps.retest_lines = cli([*command, "--retest"])
    steps.retest_record = study_record(steps.first.parent_run_id)
    steps.retest_counts = measurements(client, confirm_id)
    steps.retest_tag = json.loads(tracking.get_run(steps.first.parent_run_id).data.tags["bench.test_measured"])
    steps.confirm_id = confirm_id
    return steps


def test_the_top_configs_and_the_baseline_get_fresh_seeds_under_the_studys_parent(confirmed):
    spec, outcome = confirmed
    result = outcome.confirmation
    study_runs = tracking.child_runs(outcome.parent_run_id)
    trial_seeds = set(study_runs[study_runs["tags.bench.kind"] == "trial"]["params.seed"].astype(int))
    assert trial_seeds == {0} and not trial_seeds & set(result.seeds) and len(result.seeds) == 3
    confirm_parent = MlflowClient().get_run(result.parent_run_id)
    assert confirm_parent.data.tags[tracking.PARENT_TAG] == outcome.parent_run_id  # nested under the study
    runs = tracking.child_runs(result.parent_run_id)
    labels = [c.label for c in result.candidates] + ["stalled lenet"]
    assert len(result.candidates) == 2
    for label in labels:
        mine = runs[runs["tags.bench.label"] == label]
        assert sorted(mine["params.seed"].astype(int)) == result.seeds and set(mine["status"]) == {"FINISHED"}
    for candidate in result.candidates:  # each candidate trains at its trial's params
        mine = runs[runs["tags.bench.label"] == candidate.label]
        assert mine["params.lr"].astype(float).tolist() == pytest.approx([candidate.params["lr"]] * 3)
        assert set(mine["params.knob.width"].astype(int)) == {candidate.params["width"]}


def test_confirmation_runs_hold_out_a_fresh_split_and_the_baseline_shares_it(confirmed):
    from bench.train import load_data

    spec, outcome = confirmed
    result = outcome.confirmation
    study_runs = tracking.child_runs(outcome.parent_run_id)
    trials = study_runs[study_runs["tags.bench.kind"] == "trial"]
    assert set(trials["params.val_fold"]) == {"0"} == {str(spec.val_fold)}
    runs = tracking.child_runs(result.parent_run_id)
    by_label = runs.groupby("tags.bench.label")["params.val_fold"].apply(set).to_dict()
    assert by_label == {**{c.label: {"1"} for c in result.candidates}, "stalled lenet": {"1"}}
    assert (result.val_fold, result.trials_val_fold) == (spec.confirmation_val_fold, 0) == (1, 0)
    record = study_record(outcome.parent_run_id)
    assert (record["val_fold"], record["trials_val_fold"]) == (1, 0)
    suite_file = tracking.read_artifact_text(result.parent_run_id, f"{spec.name}.toml")
    assert suite_file.count("val_fold = 1") == 3 and "val_fold = 0" not in suite_file  # every row, baseline too
    # Not one val image of the confirmation was in the val the trials were selected on.
    trial_config = spec.config(result.candidates[0].params)
    selected = load_data(trial_config).val.images
    confirmed_on = load_data(dataclasses.replace(trial_config, val_fold=1)).val.images
    assert len(selected) == len(confirmed_on) > 0
    seen = {bytes(image.numpy().tobytes()) for image in selected}
    assert not any(bytes(image.numpy().tobytes()) in seen for image in confirmed_on)


def test_a_baseline_with_its_own_split_is_refused(tmp_path):
    from bench.search import SearchError

    path = write_study(tmp_path, "confirm-bad", baseline='{ variant = "softmax", split_seed = 7 }')
    with pytest.raises(SearchError, match=r"confirm-bad.toml:\d+: split_seed cannot be set for the baseline"):
        load_study(path)


def test_verdicts_judge_every_config_against_the_baseline_together_and_against_the_winner(confirmed):
    _, outcome = confirmed
    result = outcome.confirmation
    summary = result.summary.set_index("label")
    assert [summary.loc[c.label, "verdict_kind"] for c in result.candidates] == ["better", "better"]
    assert summary.loc["stalled lenet", "verdict"] == "baseline"
    runs = tracking.child_runs(result.parent_run_id)
    # The suite's defaults: the mean val of the last epochs, seed by seed against the baseline.
    values = {label: pd.Series(runs[runs["tags.bench.label"] == label]["metrics.val_acc_last_k"].astype(float).tolist(),
                               index=runs[runs["tags.bench.label"] == label]["tags.bench.seed"].astype(int).tolist())
              for label in summary.index}
    together = against_baseline(values, "stalled lenet", margin=0.01, pair=True).set_index("label")
    for candidate in result.candidates:  # one Holm family over both comparisons, as the suite judges them
        alone = against_baseline({k: values[k] for k in (candidate.label, "stalled lenet")}, "stalled lenet",
                                 margin=0.01, pair=True).set_index("label")
        assert summary.loc[candidate.label, "baseline_p_holm"] == pytest.approx(together.loc[candidate.label, "p_holm"])
        assert together.loc[candidate.label, "p_holm"] >= alone.loc[candidate.label, "p_holm"]
    means = {c.label: summary.loc[c.label, "measure_mean"] for c in result.candidates}
    assert result.winner.label == max(means, key=means.get)  # chosen on the confirmed measure (val, last epochs)
    assert result.verdict_kind == "better" and result.beats_baseline and result.holds_against_baseline
    versus = result.versus_winner.set_index("label")
    assert versus.loc[result.winner.label, "verdict"] == "baseline"
    assert set(versus.index) == {c.label for c in result.candidates}


def test_the_champion_is_a_confirmation_run_of_the_winner_linked_to_its_trial(confirmed):
    spec, outcome = confirmed
    result = outcome.confirmation
    client = MlflowClient()
    [version] = client.search_model_versions(f"name = '{spec.name}-best'")
    champion = client.get_model_version_by_alias(f"{spec.name}-best", "champion")
    assert champion.version == version.version and champion.run_id == result.champion_run_id
    run = client.get_run(champion.run_id)
    assert run.data.tags[tracking.PARENT_TAG] == result.parent_run_id
    assert run.data.tags["bench.label"] == result.winner.label and run.data.tags["bench.seed"] == "1"
    assert run.data.tags["bench.proposed_by_trial"] == str(result.winner.trial)
    assert run.data.tags["bench.proposed_by_trial_run"] == result.winner.run_id
    assert tracking.load_model(champion.run_id) is not None
    assert result.champion_note == "" and study_record(outcome.parent_run_id)["champion_run_id"] == champion.run_id


def test_the_champion_alias_moves_between_versions_without_adding_one_per_confirmation(confirmed):
    runs = tracking.child_runs(confirmed[1].confirmation.parent_run_id)
    first, second = runs[runs["tags.bench.label"] == confirmed[1].confirmation.winner.label]["run_id"].iloc[:2]
    name = "confirm-moves-best"
    assert (tracking.register_champion(first, name), tracking.register_champion(second, name)) == ("1", "2")
    assert tracking.register_champion(first, name) == "1"  # the earlier winner again: its version, no third
    assert sorted(tracking.registered_versions(name)) == sorted([first, second])
    found = tracking.registered_model(name, {first, second})  # the alias holder, not the newest version
    assert (str(found["version"]), found["run_id"], found["aliases"]) == ("1", first, ["champion"])


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
    assert result.test["n"] == 3 and result.test["mean"] == pytest.approx(winner["metrics.test_acc"].mean())
    # the study's parent says which config its test was spent on
    tags = tracking.get_run(outcome.parent_run_id).data.tags
    assert tags["bench.test_measured_trial"] == str(result.winner.trial)
    recorded = json.loads(tags["bench.test_measured"])
    assert (recorded["label"], recorded["times"], sorted(recorded["run_ids"])) == (
        result.winner.label, 1, sorted(winner["run_id"]))


def test_a_winner_worse_than_the_baseline_registers_nothing_and_says_so(rejected):
    result = rejected.first.confirmation
    assert result.verdict_kind == "worse" and not result.holds_against_baseline
    assert result.champion_run_id is None
    note = (f"no champion: the confirmed winner {result.winner.label} is worse than the baseline softmax "
            f"({result.summary.set_index('label').loc[result.winner.label, 'verdict']}")
    assert result.champion_note.startswith(note) and "the alias @champion stays where it was" in result.champion_note
    assert note in said(rejected.first_lines)  # printed, wrapped to the terminal
    # no new version, and the earlier champion keeps the alias
    assert rejected.first_versions == [rejected.planted] and rejected.first_alias == rejected.planted
    assert rejected.first_record["champion_run_id"] is None
    assert rejected.first_record["champion_note"] == result.champion_note


def test_a_rerun_with_more_trials_does_not_measure_test_again_and_retest_does(rejected):
    first = rejected.first.confirmation
    measured = set(first.test["run_ids"])
    assert rejected.first_tag["trial"] == first.winner.trial and rejected.first_tag["times"] == 1
    assert {r for r, n in rejected.first_counts.items() if n} == measured
    assert set(rejected.first_counts.values()) == {0, 1}  # the winner's runs once, the baseline's never
    # one more trial: the study confirms again, test stays as it was
    assert rejected.more_record["winner_test"]["trial"] == first.winner.trial
    assert rejected.more_tag == rejected.first_tag and not rejected.more_record["test_measured_now"]
    assert all(rejected.more_counts.get(r, 0) == n for r, n in rejected.first_counts.items())
    assert not any(n for r, n in rejected.more_counts.items() if r not in measured)
    printed = said(rejected.more_lines)
    assert f"test was already measured for {first.winner.label} ({first.test['mean']:.4f} ± " in printed
    assert "--retest measures it again" in printed
    # --retest: the confirmed winner's test is measured once more, and the study's record says so
    winner = rejected.retest_record["winner"]
    assert rejected.retest_record["test_measured_now"] and rejected.retest_tag["times"] == 2
    assert rejected.retest_tag["label"] == winner
    again = set(rejected.retest_tag["run_ids"])
    for run_id, n in rejected.retest_counts.items():
        assert n == rejected.more_counts.get(run_id, 0) + (run_id in again)
    assert f"test accuracy of {winner} after selection" in said(rejected.retest_lines)
    # the registry did not move through any of it
    client = MlflowClient()
    assert [str(v.version) for v in client.search_model_versions(f"name = '{rejected.name}'")] == [rejected.planted]


def test_a_confirmed_search_prints_one_best_the_confirmed_winner(rejected):
    lines = rejected.more_lines
    best = [line for line in lines if line.startswith("best")]
    assert len(best) == 1 and best[0].startswith(f"best: {rejected.more_record['winner']}, confirmed val_acc ")
    one_seed = [line for line in lines if line.startswith("search's one-seed best: trial ")]
    assert len(one_seed) == 1
    too_wide = [line for line in [*rejected.first_lines, *lines, *rejected.retest_lines] if len(line) > 100]
    assert not too_wide


def test_the_study_report_shows_the_honest_picture(confirmed, tmp_path):
    from bench.report import build_report

    spec, outcome = confirmed
    page = text_of((build_report(spec.name, tmp_path, log=False).out_dir / "index.html").read_text())
    result = outcome.confirmation
    assert "The winner, confirmed" in page and f"Winner: {result.winner.label}" in page
    assert "gap, pt" in page and "measured once after it was chosen" in page
    assert "on a fresh split: val held out of train as fold 1 of split_seed 0's order, not the trials' fold 0" in page
    for candidate in result.candidates:
        assert f"{candidate.value:.4f}" in page
    assert "No config of this search beats the baseline" not in page and "no champion" not in page
    assert "The champion is a confirmation run of the winner" in page


def test_the_study_report_states_the_confirmations_method_and_its_own_verdicts_against_the_winner(confirmed,
                                                                                                  tmp_path):
    from bench.report import build_report

    spec, outcome = confirmed
    result = outcome.confirmation
    out = build_report(spec.name, tmp_path, log=False).out_dir
    page = text_of((out / "index.html").read_text())
    # The confirmation's suite judged its defaults (mean val of the last epochs, seed by seed): the page says so,
    # not the Welch test on val after the last step.
    assert "Verdicts: mean val accuracy over the last" in page and "paired t-test over the seeds both ran" in page
    assert "Welch" not in page
    assert "The verdicts' measure: mean val accuracy over the last 5 epochs" in page
    summary = result.summary.set_index("label")
    for candidate in result.candidates:  # each interval at the level that decided it, and saying so
        assert f"at {summary.loc[candidate.label, 'baseline_ci_level'] * 100:.1f} % {summary.loc[candidate.label, 'verdict']}" \
            in page
    # "vs the winner" is what the confirmation decided, as recorded, not a second judgment made by the page.
    recorded = study_record(outcome.parent_run_id)["versus_winner"]
    decided = result.versus_winner.set_index("label")["verdict"]
    assert recorded == {label: decided[label] for label in decided.index if label != result.winner.label}
    for label, verdict in recorded.items():
        assert f"<td>{html.escape(label)}</td>" in page and f"<td>{html.escape(verdict)}</td>" in page
    # The learning curves of every trial and every confirmation run, to re-judge the study without its store.
    curves = pd.read_csv(out / "curves.csv")
    confirmation_runs = tracking.child_runs(result.parent_run_id)
    trial_runs = tracking.child_runs(outcome.parent_run_id)
    trial_runs = trial_runs[trial_runs["tags.bench.kind"] == "trial"]
    assert set(curves["stage"]) == {"trial", "confirmation"}
    assert set(curves["run_id"]) == set(confirmation_runs["run_id"]) | set(trial_runs["run_id"])
    confirming = curves[curves["stage"] == "confirmation"]
    assert set(confirming["row"]) == {*(c.label for c in result.candidates), "stalled lenet"}
    assert sorted(set(confirming["seed"])) == result.seeds
    assert set(curves.loc[curves["stage"] == "trial", "seed"]) == {spec.seed}
    last = confirming.sort_values("epoch").groupby("run_id").tail(1).set_index("run_id")
    for _, run in confirmation_runs.iterrows():
        assert last.loc[run["run_id"], "val_acc"] == pytest.approx(float(run["metrics.val_acc"]))


def test_the_report_of_a_rejected_winner_says_there_is_no_champion(rejected, tmp_path):
    from bench.report import build_report

    page = text_of((build_report(rejected.spec.name, tmp_path, log=False).out_dir / "index.html").read_text())
    note = rejected.retest_record["champion_note"]
    assert note.startswith(f"no champion: the confirmed winner {rejected.retest_record['winner']} is worse than")
    assert f"<strong>{note}.</strong>" in page.replace("&#43;", "+")
    assert "No config of this search beats the baseline" in page
    # the planted champion is not this study's run: the page does not pass it off as one
    assert "The champion is" not in page and f"No model of this study is in the Model Registry: {note}" in page


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


def test_a_confirmation_trained_under_other_settings_is_started_again_not_resumed():
    from bench.search.confirm import resuming
    from bench.suites import SuiteError

    calls, lines = [], []

    def train(resume):
        calls.append(resume)
        if resume:  # what the suite says of a parent whose runs held out val by the trials' split
            raise SuiteError("--resume: parent run 3f2a holds runs trained under other settings than this command's: "
                             "trial 0: split_seed = 0 in its runs, 1 now")
        return "a new confirmation"

    assert resuming(train, lines.append) == "a new confirmation" and calls == [True, False]
    assert lines[0].startswith("not resuming the earlier confirmation, trained under other settings")
    assert "split_seed = 0 in its runs, 1 now" in said(lines) and max(map(len, lines)) <= 100


def test_a_confirmation_run_that_fails_leaves_its_config_unjudged_and_the_search_goes_on(tmp_path, monkeypatch):
    import bench.suites.workers as workers_module

    spec = load_study(write_study(tmp_path, "confirm-a-failure", n_trials=2, batch=10, lr=(0.03, 0.08), width=(6, 8),
                                  seeds=3, baseline=STALLED, val_fraction=0.02))
    real = workers_module.train_pair
    failing: list[str] = []

    class Nan:
        def on_epoch_end(self, metrics):
            raise RuntimeError("loss became nan")

    def train_pair(suite, profile, row, config, parent_id, callbacks, *args, **kwargs):
        if suite.name.endswith("confirmation") and row.label.startswith("trial") and config.seed == 2 and not failing:
            failing.append(row.label)  # one run of the top config fails, as a NaN at a fresh seed would
            callbacks = [*callbacks, Nan()]
        return real(suite, profile, row, config, parent_id, callbacks, *args, **kwargs)

    monkeypatch.setattr(workers_module, "train_pair", train_pair)
    lines: list[str] = []
    for attempt in range(2):  # the search, then the same command again: neither stops at the failure
        outcome = run_search(spec, storage=str(tmp_path / "f.journal"), echo=lines.append)
        result = outcome.confirmation
        summary = result.summary.set_index("label")
        assert summary.loc[failing[0], "verdict"] == "not judged: 1 of 3 runs failed"
        assert result.winner is not None and result.winner.label != failing[0]  # a judged config comes first
        assert summary.loc[result.winner.label, "verdict_kind"] == "better"
    assert "the confirmation ended with runs that did not finish" in said(lines)
