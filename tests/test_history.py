"""A suite across code changes: verdicts as MLflow data on every run, and ``bench history``.

Five parent runs of one suite with real (tiny) training, the code under test a file so that a code
change leaves the plan as it was: two healthy runs, one where the file's net got worse, one where it
diverges, and a healthy one on another machine.
"""

from __future__ import annotations

import json
import math
import re
import textwrap

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from bench import tracking
from bench.cli import main
from bench.suites import load_suite, run_suite
from bench.suites import verdict_data
from bench.suites.history import format_history, history, mean_interval

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

HEALTHY = '''
from torch import nn


class Tiny(nn.Module):
    def __init__(self, shape, hidden=16):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(shape.channels * shape.size ** 2, hidden), nn.ReLU(),
                                 nn.Linear(hidden, shape.num_classes))

    def forward(self, x):
        return self.net(x)
'''
WORSE = HEALTHY.replace("return self.net(x)", "return self.net(x) * 1e-4  # a regression: logits squashed")
BROKEN = HEALTHY.replace("return self.net(x)", "return self.net(x) * float('nan')  # a regression: NaN")


def run(root, code: str) -> str:
    (root / "nets.py").write_text(textwrap.dedent(code))
    path = root / "history-test.toml"
    path.write_text(SUITE)
    try:
        return run_suite(load_suite(path), "quick", log_models=False, progress=False, echo=lambda _: None,
                         overrides={"threads": 1}).parent_run_id
    except Exception as exc:  # a suite with diverged runs ends FAILED: its parent stays in the history
        return exc.parent_run_id


@pytest.fixture(scope="module")
def parents(tmp_path_factory):
    root = tmp_path_factory.mktemp("history")
    ids = {name: run(root, code) for name, code in
           [("a", HEALTHY), ("b", HEALTHY), ("worse", WORSE), ("broken", BROKEN), ("elsewhere", HEALTHY)]}
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


def test_labels_become_metric_names_mlflow_accepts():
    assert verdict_data.name_of("net-l2 (wd=5e-4)") == "net-l2 _wd_5e-4_"
    assert verdict_data.name_of("a/b c:d.e_f-g") == "a/b c:d.e_f-g"


def test_history_lists_every_run_per_row_and_flags_the_steps_diff_fails_on(parents):
    found = history("history-test:quick")
    rows = found.rows
    assert found.runs == 5 and found.machines[-1] == "another machine (test)" and len(found.machines) == 2
    here = rows[rows["machine"] == found.machines[0]]
    assert here.groupby("row")["run"].apply(list).to_dict() == {
        "softmax": [1, 2, 3, 4], "softmax-frozen": [1, 2, 3, 4], "tiny": [1, 2, 3, 4]}
    steps = {(r["row"], r["run"]): (r["step_kind"], r["flagged"]) for _, r in here.iterrows()}
    assert steps[("tiny", 1)] == ("", False)  # the first run on a machine has no step
    assert steps[("tiny", 2)] == ("identical", False)
    assert steps[("tiny", 3)] == ("worse", True)
    assert steps[("tiny", 4)] == ("broken", True)
    assert steps[("softmax-frozen", 4)] == ("identical", False)  # worse than the baseline, but no step
    assert not rows[rows["machine"] == "another machine (test)"]["flagged"].any()  # nothing before it there
    tiny4 = here[(here["row"] == "tiny") & (here["run"] == 4)].iloc[0]
    assert tiny4["seeds"] == 0 and tiny4["verdict_kind"] == "not judged" and "NonFiniteLossError" in tiny4["step"]
    # Each run's mean and interval over its seeds: the runs' own numbers, a t-interval around their mean.
    a = here[(here["row"] == "tiny") & (here["run"] == 1)].iloc[0]
    values = children_of(parents["a"], "tags.bench.label = 'tiny'")["metrics.val_acc_last_k"]
    assert a["mean"] == pytest.approx(values.mean()) and (a["ci_low"], a["ci_high"]) == pytest.approx(
        mean_interval(values))
    latest = found.latest_flagged()  # what --fail-on-step fails on: #4 is the newest run on its machine
    assert list(zip(latest["row"], latest["run"])) == [("tiny", 4)]


def test_history_prints_within_100_columns_and_writes_page_charts_and_csv(parents, tmp_path, capsys):
    text = format_history(history("history-test:quick"))
    assert max(map(len, text.splitlines())) <= 100, text
    assert re.search(r"(?m)^ *tiny +#3 .*! worse$", text), text
    assert re.search(r"(?m)^ *tiny +#4 .*! broken$", text), text
    assert re.search(r"(?m)^ *tiny +#2 .* identical$", text), text
    assert main(["history", "history-test:quick", "--out", str(tmp_path / "h")]) == 0
    assert main(["history", "history-test:quick", "--no-report", "--fail-on-step"]) == 1  # #4 broke tiny
    page = (tmp_path / "h" / "index.html").read_text()
    assert "Flagged steps" in page and page.count("class=flagged") == 2 and "Machine 2" in page
    assert {p.name for p in (tmp_path / "h").glob("*.png")} == {f"history-{r}.png" for r in
                                                               ("softmax", "softmax-frozen", "tiny")}
    csv = pd.read_csv(tmp_path / "h" / "history.csv")
    assert len(csv) == 15 and csv["flagged"].sum() == 2


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
