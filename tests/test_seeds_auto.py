"""``--seeds auto`` end to end, with real (tiny) training: rounds, a budget stop, a failed seed, a kill
mid-round, resumes between rounds and within one, and a changed schedule refused."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from bench import checkpoint as ckpt
from bench import tracking
from bench.suites import SuiteError, SuiteFailed, load_suite, run_suite
from bench.verdicts import AutoSeeds

SUITE = """\
[suite]
name = "seeds-auto"
dataset = "mnist"
baseline = "softmax"
margin = 0.001  # a tenth of a point: at 300 images no row can be shown equivalent, so rows stay undecided

[defaults]
max_train_samples = 300
batch_size = 50
epochs = 2

[profiles.quick]

[[variants]]
variant = "softmax"

[[variants]]
variant = "softmax"
label = "near-a"
batch_size = 40

[[variants]]
variant = "softmax"
label = "near-b"
batch_size = 60

[[variants]]
variant = "softmax"
label = "flaky"
lr = 0.05
"""


class Raise:
    """Raises ``error`` at the end of epoch ``epoch`` of the pair it is given to (after the checkpoints of
    the epochs before it were written)."""

    def __init__(self, error: BaseException, epoch: int = 1) -> None:
        self.error, self.epoch = error, epoch

    def on_epoch_end(self, metrics) -> None:
        if metrics.epoch == self.epoch:
            raise self.error


def runs_of(parent_id: str, pair: tuple[str, int]) -> list[tuple[str, str]]:
    """(run id, status) of every run of one pair."""
    children = tracking.child_runs(parent_id)
    mine = children[(children["tags.bench.label"] == pair[0]) & (children["tags.bench.seed"] == str(pair[1]))]
    return list(zip(mine["run_id"], mine["status"]))


def pairs_of(parent_id: str) -> dict[tuple[str, int], list[str]]:
    """(label, seed) -> the statuses of every run of that pair, oldest first."""
    children = tracking.child_runs(parent_id).sort_values("start_time")
    found: dict[tuple[str, int], list[str]] = {}
    for _, run in children.iterrows():
        found.setdefault((run["tags.bench.label"], int(run["tags.bench.seed"])), []).append(run["status"])
    return found


def test_rounds_budget_failures_kills_and_resumes_keep_the_schedule(tmp_path):
    path = tmp_path / "seeds-auto.toml"
    path.write_text(SUITE)
    suite = load_suite(path)
    common = dict(log_models=False, progress=False, echo=lambda _: None, overrides={"threads": 1},
                  checkpoints=ckpt.Policy(1))

    # Round 1 (3 seeds a row): flaky's seed 1 fails by an error of its own; the budget stops the rounds.
    with pytest.raises(SuiteFailed) as first:
        run_suite(suite, "quick", auto=AutoSeeds(start=3, step=2, max_seeds=5, budget_s=0.001),
                  callbacks_for=lambda row, c: [Raise(RuntimeError("boom"))] if (row.label, c.seed) == ("flaky", 1) else [],
                  **common)
    parent_id = first.value.parent_run_id
    summary = first.value.summary.set_index("label")
    tags = tracking.get_run(parent_id).data.tags
    assert tags["bench.seeds_design"] == ("auto start=3 step=2 max=5 spending obf; margin 0.001; measure val_acc_last_k; "
                                          "paired; baseline softmax; rows softmax,near-a,near-b,flaky")
    assert (tags["bench.looks"], tags["bench.looks_taken"], tags["bench.round_judged"]) == ("2", "1", "true")
    assert tags["bench.seeds_auto_stop"].startswith("budget: ")
    assert summary.loc["flaky", "verdict"] == "not judged: 1 of 3 runs failed"
    assert summary.loc["flaky", "failures"] == "seed 1: RuntimeError: boom"
    undecided = [label for label in ("near-a", "near-b") if summary.loc[label, "verdict_kind"] == "undecided"]
    assert undecided, summary["verdict"]  # near-nulls at a 0.1-point margin: a verdict here would be a fluke

    # Resumed without a budget: round 2 gives the undecided rows and the baseline seeds 3 and 4; the
    # process is killed (Ctrl-C) in the middle of it.
    victim = (undecided[0], 3)
    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, "quick", auto=AutoSeeds(start=3, step=2, max_seeds=5), resume=True,
                  callbacks_for=lambda row, c: [Raise(KeyboardInterrupt(), epoch=2)] if (row.label, c.seed) == victim
                  else [], **common)
    killed = [run_id for run_id, statuses in runs_of(parent_id, victim)]
    tags = tracking.get_run(parent_id).data.tags
    assert tracking.get_run(parent_id).info.status == "KILLED"
    assert (tags["bench.looks_taken"], tags["bench.round_judged"]) == ("1", "false")  # round 2 not judged yet
    planned = json.loads(tags["bench.round_seeds"])
    assert planned["softmax"] == [0, 1, 2, 3, 4] and planned["flaky"] == [0, 1, 2]
    assert all(planned[label] == [0, 1, 2, 3, 4] for label in undecided)
    # Its report, between looks, shows look 1's verdicts on the seeds look 1 judged (not "not judged:
    # 2 of 5 runs did not finish") and says that a round is under way.
    from bench.report import build_report
    between = build_report(parent_id, tmp_path / "between", log=False)
    shown = between.summary.set_index("label")
    assert shown.loc["softmax", "runs"] == 3 and shown.loc[undecided[0], "runs"] == 3
    assert shown.loc[undecided[0], "verdict"] == summary.loc[undecided[0], "verdict"]
    assert shown.loc["flaky", "verdict"] == "not judged: 1 of 3 runs failed"
    page = " ".join((tmp_path / "between" / "index.html").read_text().split())
    assert "A new round of seeds is under way" in page and "the verdicts of look 1 on the seeds judged" in page
    assert "11 finished run(s)" in page  # the charts' runs: look 1's 12 less flaky's failed one
    assert (pd.read_csv(tmp_path / "between" / "curves.csv")["seed"] >= 3).any()  # curves.csv keeps every run
    assert "stopped: budget" not in page  # the budget stopped round 1's command, not this one
    from bench.suites.diff import resolve
    assert all(seeds == [0, 1, 2] for seeds in resolve(parent_id).planned.values())  # bench diff: look 1's seeds too

    # Resumed again: round 2 finishes (the killed pair continues; flaky's failed seed 1 belongs to a
    # judged round and stays failed), and look 2 is taken: the last one the schedule allows.
    with pytest.raises(SuiteFailed) as finished:  # flaky's seed 1 stays failed, so the parent ends FAILED
        run_suite(suite, "quick", auto=AutoSeeds(start=3, step=2, max_seeds=5), resume=True, **common)
    outcome = finished.value
    assert outcome.parent_run_id == parent_id
    tags = tracking.get_run(parent_id).data.tags
    assert (tags["bench.looks_taken"], tags["bench.round_judged"]) == ("2", "true")
    found = pairs_of(parent_id)
    expected = {(label, seed) for label, seeds in planned.items() for seed in seeds}
    assert set(found) == expected  # no seed outside the schedule...
    assert found[("flaky", 1)] == ["FAILED"]  # ...a failed seed neither retried nor replaced...
    assert all(statuses.count("FINISHED") == 1 for pair, statuses in found.items() if pair != ("flaky", 1))  # ...none twice
    assert found[victim] == ["FINISHED"] and [run_id for run_id, _ in runs_of(parent_id, victim)] == killed  # continued
    summary = outcome.summary.set_index("label")
    assert summary.loc["softmax", "runs"] == 5 and summary.loc["flaky", "runs"] == 3

    # Another schedule on the same parent, after looks were taken: refused, before anything runs.
    with pytest.raises(SuiteError, match=r"was planned as 'auto start=3 step=2 max=5 spending obf; .*this command asks for "
                                         r"'auto start=3 step=2 max=7"):
        run_suite(suite, "quick", auto=AutoSeeds(start=3, step=2, max_seeds=7), resume=True, **common)
    # ... as is another margin (chosen after seeing the data); the rows named in another order are no change.
    with pytest.raises(SuiteError, match=r"asks for 'auto start=3 step=2 max=5 spending obf; margin 0.01;"):
        run_suite(suite, "quick", auto=AutoSeeds(start=3, step=2, max_seeds=5), resume=True, margin=0.01, **common)
    assert pairs_of(parent_id) == found



def test_on_a_shared_storage_a_resume_takes_over_a_stopped_owner_and_a_refused_one_leaves_nothing(tmp_path):
    import optuna

    path = tmp_path / "seeds-auto.toml"
    path.write_text(SUITE.replace('name = "seeds-auto"', 'name = "seeds-auto-shared"'))
    suite = load_suite(path)
    storage = str(tmp_path / "shared.journal")
    lines: list[str] = []
    common = dict(storage=storage, log_models=False, progress=False, echo=lines.append, overrides={"threads": 1},
                  checkpoints=ckpt.Policy(1), rows=["softmax", "near-a"])
    auto = AutoSeeds(start=2, step=1, max_seeds=3)
    # The process that owns the parent is stopped in its first round.
    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, "quick", auto=auto, **common,
                  callbacks_for=lambda row, c: [Raise(KeyboardInterrupt(), epoch=2)] if (row.label, c.seed) ==
                  ("near-a", 1) else [])
    [parent_id] = tracking.find_runs(filter_string="tags.`bench.suite` = 'seeds-auto-shared' and "
                                                   "tags.`bench.kind` = 'suite'")["run_id"]
    assert tracking.get_run(parent_id).info.status == "KILLED"
    [study] = optuna.get_all_study_names(optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(storage)))
    assert optuna.load_study(study_name=study, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(storage))).user_attrs["bench_queue_closed"] is True  # none waits
    # The same command with --resume, on any machine: it takes the parent over and finishes the schedule.
    outcome = run_suite(suite, "quick", auto=auto, resume=True, **common)
    assert outcome.parent_run_id == parent_id and any("taking over parent run" in line for line in lines)
    assert tracking.get_run(parent_id).info.status == "FINISHED"
    found = pairs_of(parent_id)
    assert all(statuses == ["FINISHED"] for statuses in found.values()), found  # the stopped pair continued
    # A resume under another schedule is refused before it makes a study of its own.
    with pytest.raises(SuiteError, match="was planned as"):
        run_suite(suite, "quick", auto=AutoSeeds(start=2, step=1, max_seeds=4), resume=True, **common)
    assert optuna.get_all_study_names(optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(storage))) == [study]


def test_auto_seeds_from_a_first_seed_pair_on_those_seeds_and_record_them(tmp_path):
    """A design chosen on seeds 0.. is judged on seeds it never saw: every round draws from --first-seed on."""
    path = tmp_path / "seeds-auto.toml"
    path.write_text(SUITE)
    suite = load_suite(path)
    auto = AutoSeeds(start=2, step=1, max_seeds=3, first_seed=7)
    assert auto.seed_list(3) == [7, 8, 9] and auto.schedule == "auto start=2 step=1 max=3 from seed 7 spending obf"
    outcome = run_suite(suite, "quick", auto=auto, rows=["softmax", "near-a"], log_models=False, progress=False,
                        echo=lambda _: None, overrides={"threads": 1})
    tags = tracking.get_run(outcome.parent_run_id).data.tags
    assert tags["bench.seeds_design"].startswith("auto start=2 step=1 max=3 from seed 7 spending obf; ")
    found = pairs_of(outcome.parent_run_id)
    assert {seed for _, seed in found} <= {7, 8, 9} and {("softmax", 7), ("softmax", 8), ("near-a", 7)} <= set(found)
    # near-a stays undecided at a 0.1-point margin: round 2 gives both rows seed 9, the next of the sequence.
    assert set(found) == {(label, seed) for label in ("softmax", "near-a") for seed in (7, 8, 9)}
    # The same schedule from seed 0 is another design: refused on this parent after its looks.
    with pytest.raises(SuiteError, match=r"was planned as 'auto start=2 step=1 max=3 from seed 7 spending obf;"):
        run_suite(suite, "quick", auto=AutoSeeds(start=2, step=1, max_seeds=3), rows=["softmax", "near-a"], resume=True,
                  log_models=False, progress=False, echo=lambda _: None, overrides={"threads": 1})


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "3", "--first-seed", "5"], "--max-seeds, --first-seed, --budget and --spending belong to --seeds auto"),
    (["--seeds", "auto", "--first-seed", "-1"], "--first-seed -1 is not accepted; accepted: an integer >= 0"),
])
def test_first_seed_is_checked_before_anything_runs(tmp_path, capsys, argv, message):
    from bench.cli import main

    path = tmp_path / "seeds-auto.toml"
    path.write_text(SUITE)
    with pytest.raises(SystemExit) as exit_:
        main(["suite", str(path), *argv])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
