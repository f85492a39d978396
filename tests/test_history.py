"""A suite across code changes: verdicts as MLflow data on every run, and ``bench history``.

Six parent runs of one suite with real (tiny) training, the code under test a file so that a code
change leaves the plan as it was: two healthy runs, one of another plan (fewer seeds), one where the
file's net got worse, one where it diverges, and a healthy one on another machine.
"""

from __future__ import annotations

import dataclasses
import json
import math
import textwrap

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from bench import tracking
from bench.cli import main
from tests.file_variant import broken, healthy, run_with, worse
from bench.suites import verdict_data
from bench.suites.diff import plan_differences, resolve
from bench.suites.history import history, machine_of, mean_interval
from bench.suites.parent import decisions_of

SUITE = """\
[suite]
name = "history-test"
dataset = "mnist"
seeds = [0, 1, 2]
baseline = "softmax"

[defaults]
max_train_samples = 900
batch_size = 50
lr = 0.1

[profiles.quick]
epochs = 1

[[variants]]
variant = "softmax"

[[variants]]
variant = "softmax"
label = "softmax-frozen"
lr = 1e-7  # stays at its random init: far below the baseline

[[variants]]
variant = "nets.py:Tiny"
label = "tiny"
"""

HEALTHY = healthy(hidden=16)
WORSE, BROKEN = worse(HEALTHY), broken(HEALTHY)


def run(root, code: str, **kwargs) -> str:
    return run_with(root, "history-test", SUITE, code, **kwargs)


@pytest.fixture(scope="module")
def parents(tmp_path_factory):
    root = tmp_path_factory.mktemp("history")
    ids = {"a": run(root, HEALTHY), "b": run(root, HEALTHY),
           "other-seeds": run(root, HEALTHY, seeds=[0, 1]),  # another plan: shown, not compared
           "worse": run(root, WORSE), "broken": run(root, BROKEN)}
    # The last through the command line, as users run it (it logs the forest plot too), on "another machine".
    (root / "nets.py").write_text(textwrap.dedent(HEALTHY))
    before = set(tracking.find_runs(filter_string="tags.`bench.kind` = 'suite'")["run_id"])
    assert main(["suite", str(root / "history-test.toml"), "--profile", "quick", "--no-log-model", "--quiet",
                 "--threads", "1"]) == 0
    [ids["elsewhere"]] = set(tracking.find_runs(filter_string="tags.`bench.kind` = 'suite'")["run_id"]) - before
    for child in tracking.child_runs(ids["elsewhere"])["run_id"]:  # as if it had run on another machine
        tracking.set_tags(child, {"hw.machine": "another machine (test)"})
    return ids


def children_of(parent_id: str, filter_string: str = "") -> pd.DataFrame:
    experiment = tracking.get_run(parent_id).info.experiment_id
    where = f"tags.`mlflow.parentRunId` = '{parent_id}'" + (f" and {filter_string}" if filter_string else "")
    return mlflow.search_runs([experiment], filter_string=where)


def test_every_run_carries_its_rows_verdict_and_the_ui_filter_finds_the_worse_ones(parents):
    summary = pd.read_csv(mlflow.artifacts.download_artifacts(f"runs:/{parents['a']}/summary.csv"))
    worse = children_of(parents["a"], "tags.bench.verdict = 'worse'")  # filtered as the UI's search box does
    worse_rows = sorted(summary.loc[summary["verdict_kind"] == "worse", "label"])
    assert "softmax-frozen" in worse_rows and sorted(worse["tags.bench.label"]) == sorted(worse_rows * 3)
    children = children_of(parents["a"])
    for label, group in children.groupby("tags.bench.label"):
        row = summary[summary["label"] == label].iloc[0]
        assert set(group["tags.bench.verdict"]) == {row["verdict_kind"]}
        assert set(group["tags.bench.verdict_text"]) == {row["verdict"]}
        assert set(group["tags.bench.measure"]) == {"val_acc_last_k"}
        if label == "softmax":
            assert group["metrics.verdict.diff"].tolist() == [0.0] * 3 and group["metrics.verdict.ci_low"].isna().all()
            continue
        for metric, column in [("diff", "baseline_diff"), ("ci_low", "baseline_ci_low"),
                               ("ci_high", "baseline_ci_high"), ("ci_level", "baseline_ci_level")]:
            assert group[f"metrics.verdict.{metric}"].tolist() == pytest.approx([row[column]] * 3)
        assert group["metrics.verdict.seeds"].tolist() == [3.0] * 3
    frozen = summary[summary["label"] == "softmax-frozen"].iloc[0]
    assert frozen["verdict_kind"] == "worse" and frozen["baseline_ci_high"] < 0


def test_the_parent_holds_a_metric_family_per_row_and_the_summary_table(parents):
    run = MlflowClient().get_run(parents["a"])
    summary = pd.read_csv(mlflow.artifacts.download_artifacts(f"runs:/{parents['a']}/summary.csv"))
    for _, r in summary.iterrows():
        name = r["label"]
        assert run.data.tags[f"bench.verdict.{name}"] == r["verdict_kind"]
        assert run.data.metrics[f"row/{name}/mean"] == pytest.approx(r["measure_mean"])
        assert run.data.metrics[f"row/{name}/seeds"] == 3
        if name != "softmax":
            assert run.data.metrics[f"row/{name}/diff"] == pytest.approx(r["baseline_diff"])
            assert run.data.metrics[f"row/{name}/ci_high"] == pytest.approx(r["baseline_ci_high"])
    counts = summary["verdict_kind"].value_counts()
    assert run.data.tags["bench.verdicts"] == ", ".join(f"{n} {kind}" for kind, n in counts.items() if kind != "baseline")
    # The table the run page renders, one row per row at the look that judged them (fixed seeds: look 1).
    table = MlflowClient().load_table(run.info.experiment_id, "verdicts.json", run_ids=[parents["a"]])
    assert list(table["row"]) == ["softmax", "softmax-frozen", "tiny"] and set(table["look"]) == {1}
    frozen = table[table["row"] == "softmax-frozen"].iloc[0]
    assert frozen["diff pt"] == pytest.approx(summary.loc[summary["label"] == "softmax-frozen", "baseline_diff"].iloc[0]
                                              * 100, abs=0.01)
    assert json.loads(run.data.tags["mlflow.loggedArtifacts"]) == [{"path": "verdicts.json", "type": "table"}]


def test_a_look_is_tabled_once_however_often_it_is_published(parents):
    summary = pd.read_csv(mlflow.artifacts.download_artifacts(f"runs:/{parents['b']}/summary.csv"))
    summary.attrs.update(measure="val_acc_last_k", design="paired")
    verdict_data.publish_look(parents["b"], summary, 1)  # a resume judging look 1 again
    verdict_data.publish_look(parents["b"], summary, 2)  # the next look adds its rows
    experiment = tracking.get_run(parents["b"]).info.experiment_id
    table = MlflowClient().load_table(experiment, "verdicts.json", run_ids=[parents["b"]])
    assert table.groupby("look").size().to_dict() == {1: 3, 2: 3}


def test_labels_become_metric_and_tag_names_mlflow_accepts_each_its_own(parents):
    assert verdict_data.name_of("net-l2 (wd=5e-4)") == "net-l2 _wd_5e-4_"
    assert verdict_data.name_of("a/b c:d.e_f-g") == "a_b c:d.e_f-g"
    labels = ["x/", "a//b", ".", "../up", "net (a)", "net [a]", "é" * 300, "net"]
    names = verdict_data.names_of(labels)
    assert len(set(names.values())) == len(labels) and names["net"] == "net"
    assert names["net (a)"].startswith("net _a_-") and names["net [a]"].startswith("net _a_-")
    # MLflow takes every one of them, as the parent's metrics and tags (more than one request's 100 tags).
    experiment = tracking.get_run(parents["a"]).info.experiment_id
    run_id = tracking.create_run(experiment, "names", {})
    tags = {f"bench.verdict.{name}.{k}": "x" for name in names.values() for k in range(15)}
    tracking.log_values(run_id, tags=tags, metrics={f"row/{name}/mean": 0.5 for name in names.values()})
    logged = MlflowClient().get_run(run_id).data
    assert set(tags) <= set(logged.tags) and {f"row/{name}/mean" for name in names.values()} == set(logged.metrics)
    tracking.end_run(run_id, "FINISHED")


def test_history_lists_every_run_per_row_and_flags_the_steps_diff_fails_on(parents):
    found = history("history-test:quick")
    rows = found.rows
    assert found.runs == 6 and found.machines[-1] == "another machine (test)" and len(found.machines) == 2
    here = rows[rows["machine"] == found.machines[0]]
    assert here.groupby("row")["run"].apply(list).to_dict() == {
        "softmax": [1, 2, 3, 4, 5], "softmax-frozen": [1, 2, 3, 4, 5], "tiny": [1, 2, 3, 4, 5]}
    steps = {(r["row"], r["run"]): (r["step_kind"], r["flagged"]) for _, r in here.iterrows()}
    assert steps[("tiny", 1)] == ("", False)  # the first run on a machine has no step
    assert steps[("tiny", 2)] == ("identical", False)
    assert steps[("tiny", 3)] == ("other plan", False)  # seeds 0,1: not compared
    assert steps[("tiny", 4)] == ("worse", True)  # against #2, the latest run of its plan
    assert steps[("tiny", 5)] == ("broken", True)
    assert steps[("softmax-frozen", 5)] == ("identical", False)  # worse than the baseline, but no step
    assert "seeds A 0,1,2, B 0,1" in here[(here["row"] == "tiny") & (here["run"] == 3)].iloc[0]["step"]
    assert not rows[rows["machine"] == "another machine (test)"]["flagged"].any()  # nothing before it there
    tiny5 = here[(here["row"] == "tiny") & (here["run"] == 5)].iloc[0]
    assert tiny5["seeds"] == 0 and tiny5["verdict_kind"] == "not judged" and "NonFiniteLossError" in tiny5["step"]
    # Each run's mean and interval over its seeds: the runs' own numbers, a t-interval around their mean.
    a = here[(here["row"] == "tiny") & (here["run"] == 1)].iloc[0]
    values = children_of(parents["a"], "tags.bench.label = 'tiny'")["metrics.val_acc_last_k"]
    assert a["mean"] == pytest.approx(values.mean()) and (a["ci_low"], a["ci_high"]) == pytest.approx(
        mean_interval(values))
    # The verdict as the run recorded it (its summary.csv), not judged again by today's code.
    recorded = pd.read_csv(mlflow.artifacts.download_artifacts(f"runs:/{parents['worse']}/summary.csv"))
    assert list(here[here["run"] == 4]["verdict"]) == list(recorded["verdict"])
    latest = found.latest_flagged()  # what --fail-on-step fails on: #5 is the newest run on its machine
    assert list(zip(latest["row"], latest["run"])) == [("tiny", 5)]
    assert "verdicts.png" in tracking.list_artifacts(parents["elsewhere"])  # `bench suite` logged the forest plot


def test_a_running_parent_is_shown_not_compared(parents):
    tracking.reopen_run(parents["broken"])  # as if it were still training
    try:
        rows = history("history-test:quick").rows
    finally:
        tracking.end_run(parents["broken"], "FAILED")
    five = rows[rows["run"] == 5]
    assert set(five["step_kind"]) == {"running"} and not five["flagged"].any()


def test_a_parent_whose_runs_never_said_their_machine_is_placed_by_its_own(parents):
    side = resolve(parents["broken"])
    bare = dataclasses.replace(side, pairs=side.pairs.drop(columns=["tags.hw.machine"]))
    assert machine_of(bare) == machine_of(side) == tracking.get_run(parents["broken"]).data.tags["hw.machine"]


def test_a_setting_an_older_bench_did_not_log_counts_as_its_default(parents):
    a, b = resolve(parents["a"]), resolve(parents["b"])
    older = dataclasses.replace(a, pairs=a.pairs.drop(columns=["params.val_fold"]))  # logged before val_fold existed
    assert plan_differences(older, b) == []
    other = dataclasses.replace(a, pairs=a.pairs.assign(**{"params.val_fold": "1"}))
    assert "softmax: val_fold A 1, B 0" in plan_differences(other, b)


def test_older_parents_decisions_are_read_from_their_tag(parents):
    experiment = tracking.get_run(parents["a"]).info.experiment_id
    run_id = tracking.create_run(experiment, "older parent", {"bench.decisions": json.dumps({"net": {"verdict_kind": "worse"}})})
    assert decisions_of(run_id) == {"net": {"verdict_kind": "worse"}}
    tracking.end_run(run_id, "FINISHED")


def test_history_refuses_what_names_no_suite(capsys):
    for target, why in [("no-such-suite", "no parent run of suite 'no-such-suite'"),
                        ("history-test~1", "accepted: NAME or NAME:PROFILE")]:
        with pytest.raises(SystemExit) as stop:
            main(["history", target])
        assert stop.value.code == 2 and why in capsys.readouterr().err


def test_mean_interval_is_the_t_interval():
    values = pd.Series([0.80, 0.82, 0.84])
    low, high = mean_interval(values)
    half = 4.302652729911275 * 0.02 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert (low, high) == pytest.approx((0.82 - half, 0.82 + half))
    assert all(math.isnan(v) for v in mean_interval(pd.Series([0.8])))
