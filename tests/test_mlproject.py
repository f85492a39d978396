"""The MLproject entry points, run the way users run them: `mlflow run . --env-manager local`."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

from bench import tracking

REPO = Path(__file__).resolve().parents[1]


def mlflow_cli() -> str:
    return shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"


def test_every_entry_point_is_declared_with_typed_defaults():
    spec = yaml.safe_load((REPO / "MLproject").read_text())
    assert {"main", "train", "suite", "search", "report", "diff", "history"} <= set(spec["entry_points"])
    for name, entry in spec["entry_points"].items():
        for param, declared in entry.get("parameters", {}).items():
            assert declared["type"] in {"string", "float", "path"}, (name, param)
            assert "default" in declared, (name, param)
            assert "{" + param + "}" in entry["command"], (name, param)
    assert (REPO / spec["python_env"]).is_file()


def test_train_entry_point_end_to_end(tracking_store, tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_store, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("MLFLOW_RUN_ID", None)
    result = subprocess.run(
        [
            mlflow_cli(), "run", str(REPO), "--env-manager", "local", "--experiment-name", "mlproject-e2e",
            "-e", "train", "-P", "variant=lenet", "-P", "dataset=mnist", "-P", "epochs=1", "-P", "max_train_samples=500",
        ],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = tracking.find_runs(filter_string="tags.`bench.variant` = 'lenet' and params.max_train_samples = '500'")
    assert len(runs) == 1
    run = MlflowClient().get_run(runs.iloc[0]["run_id"])
    assert run.info.status == "FINISHED" and run.data.params["epochs"] == "1"
    outer = MlflowClient().get_run(run.data.tags[tracking.PARENT_TAG])  # the run `mlflow run` made
    assert outer.data.params["variant"] == "lenet" and outer.info.status == "FINISHED"
    assert tracking.logged_models(run.info.run_id) == [tracking.MODEL_NAME]


def test_main_style_suite_lands_in_the_suites_experiment_with_readable_names(tracking_store, tmp_path):
    """`mlflow run .` without --experiment-name: the suite's runs go to the suite's experiment,
    not MLflow's Default, and `mlflow run`'s own run is named and described to point at them."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_store, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for key in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(key, None)
    result = subprocess.run(
        [mlflow_cli(), "run", str(REPO), "--env-manager", "local", "-e", "suite",
         "-P", f"file={REPO / 'studies' / 'mnist_seeds.toml'}", "-P", "max_train_samples=300", "-P", "workers=2"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    client = MlflowClient()
    experiment = client.get_experiment_by_name("mnist-seeds")
    parents = tracking.find_runs([experiment.experiment_id], "tags.`bench.kind` = 'suite'")
    assert len(parents) == 1
    parent = client.get_run(parents.iloc[0]["run_id"])
    assert parent.info.run_name == "mnist-seeds [quick]"
    assert "softmax regression" in parent.data.tags["mlflow.note.content"]
    children = tracking.child_runs(parent.info.run_id)
    assert len(children) == 4 and set(children["status"]) == {"FINISHED"}
    lenet = children[children["tags.bench.label"] == "lenet"].iloc[0]
    assert "pytorch/examples" in lenet["tags.mlflow.note.content"] and "Suite mnist-seeds" in lenet["tags.mlflow.note.content"]
    launcher = client.get_run(parent.data.tags["bench.launched_by"])
    assert launcher.info.experiment_id == "0" and launcher.info.run_name == "mlflow run: mnist-seeds [quick]"
    assert parent.info.run_id in launcher.data.tags["mlflow.note.content"]
    # The history entry point over that store: the one parent run, per row, in the terminal and a page.
    result = subprocess.run(
        [mlflow_cli(), "run", str(REPO), "--env-manager", "local", "-e", "history", "-P", "suite=mnist-seeds:quick",
         "-P", f"out={tmp_path / 'history'}"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "history of mnist-seeds:quick: 1 parent run(s) on 1 machine(s)" in result.stdout, result.stdout
    assert (tmp_path / "history" / "index.html").is_file() and (tmp_path / "history" / "history.csv").is_file()
