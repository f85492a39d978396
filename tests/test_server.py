"""The real MLflow tracking server: log over HTTP, read the runs back through its REST API."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("server")
    port = free_port()
    mlflow = shutil.which("mlflow", path=str(BIN)) or "mlflow"
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [
            mlflow, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{root / 'server.db'}", "--artifacts-destination", str(root / "artifacts"),
        ],
        stdout=log, stderr=subprocess.STDOUT, cwd=root,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("mlflow server did not start: " + (root / "server.log").read_text()[-2000:])
    if proc.poll() is not None:
        pytest.fail("mlflow server exited: " + (root / "server.log").read_text()[-2000:])
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def rest(url: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{url}/api/2.0/mlflow/{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def test_cli_logs_to_a_tracking_server_and_rest_api_reads_it_back(server, tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": server}
    result = subprocess.run(
        [
            sys.executable, "-m", "bench", "train", "--variant", "softmax", "--dataset", "mnist", "--epochs", "2",
            "--max-train-samples", "500", "--experiment", "over-http", "--quiet",
        ],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (tmp_path / "mlflow.db").exists()  # nothing went to the local default store

    experiment = rest(server, "experiments/get-by-name?experiment_name=over-http")["experiment"]
    runs = rest(server, "runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
    assert len(runs) == 1
    run = runs[0]
    assert run["info"]["status"] == "FINISHED"
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["variant"] == "softmax" and params["epochs"] == "2" and params["num_parameters"] == "7850"
    history = rest(server, f"metrics/get-history?run_id={run['info']['run_id']}&metric_key=val_acc")["metrics"]
    assert sorted(m["step"] for m in history) == [1, 2]
    models = rest(
        server,
        "logged-models/search",
        {"experiment_ids": [experiment["experiment_id"]], "filter": f"source_run_id = '{run['info']['run_id']}'"},
    )
    assert [m["info"]["name"] for m in models["models"]] == ["model"]
