"""The many-machine deployment of docs/deploy.md, on loopback: PostgreSQL behind a real
`mlflow server` with proxied artifacts, two workers that share nothing but the data root and
the servers (own working directory, own BENCH_CACHE_DIR), and a third directory that has
never seen their files rebuilding both reports and loading the registered model."""

import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.test_server import free_port

BIN = Path(sys.executable).parent

SUITE = """\
[suite]
name = "deploy-suite"
dataset = "mnist"
seeds = [0, 1, 2]

[defaults]
max_train_samples = 2000
batch_size = 50

[profiles.quick]
epochs = 2

[profiles.full]
epochs = 4

[[variants]]
variant = "softmax"

[[variants]]
variant = "lenet"
"""

STUDY = """\
[study]
name = "deploy-search"
dataset = "mnist"
variant = "lenet"
epochs = 1
n_trials = 4
sampler_seed = 0
pruner = "none"

[training]
max_train_samples = 500
batch_size = 100

[space]
lr = { low = 1e-3, high = 0.3, log = true }
width = { low = 2, high = 8 }

[confirm]
top = 1
seeds = 2
"""


@pytest.fixture(scope="module")
def postgres_url() -> str:
    url = os.environ.get("BENCH_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI must start PostgreSQL and set BENCH_TEST_POSTGRES_URL (see .ci/run)")
        pytest.skip("set BENCH_TEST_POSTGRES_URL=postgresql://user:pass@127.0.0.1/db (CI does)")
    return url


def in_schema(url: str, schema: str) -> str:
    """The same database, with tables in ``schema`` (MLflow and Optuna both keep an alembic_version table)."""
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


@pytest.fixture(scope="module")
def deployment(postgres_url, tmp_path_factory):
    import sqlalchemy

    root = tmp_path_factory.mktemp("deploy")
    tag = uuid.uuid4().hex[:8]
    schemas = {"mlflow": f"mlflow_{tag}", "optuna": f"optuna_{tag}"}
    engine = sqlalchemy.create_engine(postgres_url, poolclass=sqlalchemy.pool.NullPool)
    with engine.begin() as conn:
        for schema in schemas.values():
            conn.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    port = free_port()
    log = open(root / "server.log", "w")
    # MLflow's built-in authentication, as docs/deploy.md runs it: settings in a file, secrets in the
    # environment, nothing secret on a command line.
    (root / "auth.ini").write_text(
        f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{root / 'basic_auth.db'}\n"
        "admin_username = admin\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "auth_cache_ttl_seconds = 60\n"
    )
    admin_password, worker_password = uuid.uuid4().hex, uuid.uuid4().hex
    server_env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(root / "auth.ini"),
                  "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password, "MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex}
    server = subprocess.Popen(
        [shutil.which("mlflow", path=str(BIN)) or "mlflow", "server", "--app-name", "basic-auth", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1", "--backend-store-uri", in_schema(postgres_url, schemas["mlflow"]),
         "--artifacts-destination", str(root / "artifact-store")],
        stdout=log, stderr=subprocess.STDOUT, cwd=root, env=server_env,
    )
    tracking_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(f"{tracking_url}/health", timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail("mlflow server did not start: " + (root / "server.log").read_text()[-3000:])
            time.sleep(0.5)
    # The workers' own user, made by the admin through the auth API.
    import requests

    made = requests.post(f"{tracking_url}/api/2.0/mlflow/users/create", auth=("admin", admin_password), timeout=30,
                         json={"username": "bench-worker", "password": worker_password})
    assert made.status_code == 200, made.text
    yield {"tracking": tracking_url, "optuna": in_schema(postgres_url, schemas["optuna"]), "root": root,
           "password": urlsplit(postgres_url).password, "user": ("bench-worker", worker_password),
           "admin_password": admin_password}
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
    with engine.begin() as conn:
        for schema in schemas.values():
            conn.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
    engine.dispose()


def machine(deployment, name: str) -> tuple[Path, dict[str, str]]:
    """A working directory and environment as on its own machine: only the servers and the data root are shared."""
    home = deployment["root"] / name
    (home / "studies").mkdir(parents=True)
    (home / "studies" / "deploy_suite.toml").write_text(SUITE)
    (home / "studies" / "deploy_search.toml").write_text(STUDY)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "BENCH_"))}
    user, password = deployment["user"]
    env.update(MLFLOW_TRACKING_URI=deployment["tracking"], BENCH_CACHE_DIR=str(home / "cache"),
               BENCH_DATA_DIR=os.environ["BENCH_DATA_DIR"], OMP_NUM_THREADS="1", BENCH_SYSTEM_METRICS="0",
               MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password, BENCH_STORAGE_URL=deployment["optuna"])
    return home, env


def on_both(deployment, command: list[str]) -> list[subprocess.CompletedProcess]:
    """The same command started at once on both worker machines; both must succeed."""
    procs = []
    for name in ("machine-a", "machine-b"):
        if name not in deployment:
            deployment[name] = machine(deployment, name)
        home, env = deployment[name]
        procs.append(subprocess.Popen([sys.executable, "-m", "bench", *command], cwd=home, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=420)
        proc.output = out
        results.append(proc)
        assert proc.returncode == 0, out[-4000:]
    return results


@pytest.fixture(scope="module")
def ran(deployment):
    # The storage URL (with its password) comes from BENCH_STORAGE_URL: no --storage on any command line.
    suite = on_both(deployment, ["suite", "studies/deploy_suite.toml", "--quiet"])
    search = on_both(deployment, ["search", "studies/deploy_search.toml", "--quiet"])
    return suite, search


@pytest.fixture(scope="module")
def client(deployment, ran):
    # Through the environment, not mlflow.set_tracking_uri: that one pins a process-wide URI (and
    # rewrites MLFLOW_TRACKING_URI), and every later test would talk to this module's stopped server.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", deployment["tracking"])
        env.setenv("MLFLOW_TRACKING_USERNAME", deployment["user"][0])
        env.setenv("MLFLOW_TRACKING_PASSWORD", deployment["user"][1])
        yield MlflowClient(deployment["tracking"])


def test_an_unauthenticated_client_cannot_create_a_run_or_read_one(deployment, client, ran):
    import requests

    experiment = client.get_experiment_by_name("deploy-suite").experiment_id
    anonymous = requests.post(f"{deployment['tracking']}/api/2.0/mlflow/runs/create", timeout=30,
                              json={"experiment_id": experiment})
    assert anonymous.status_code == 401
    wrong = requests.post(f"{deployment['tracking']}/api/2.0/mlflow/runs/create", timeout=30,
                          json={"experiment_id": experiment}, auth=("bench-worker", "not-the-password"))
    assert wrong.status_code == 401
    listing = requests.post(f"{deployment['tracking']}/api/2.0/mlflow/runs/search", timeout=30,
                            json={"experiment_ids": [experiment]})
    assert listing.status_code == 401


def test_each_machine_says_what_it_trained_and_both_see_the_whole_suite(ran):
    import re

    trained = [int(re.search(r"(\d+) trained here", proc.output).group(1)) for proc in ran[0]]
    assert sum(trained) == 6 and all(n > 0 for n in trained), trained
    assert all("6 of 6 pairs finished" in proc.output for proc in ran[0])


def runs_of(client, experiment: str):
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=500)


def pids(procs) -> set[str]:
    return {str(proc.pid) for proc in procs}


def test_the_workers_split_the_suite_each_pair_once(client, ran):
    runs = runs_of(client, "deploy-suite")
    children = [r for r in runs if r.data.tags.get("bench.kind") == "run"]
    pairs = sorted((r.data.tags["bench.label"], r.data.tags["bench.seed"]) for r in children)
    assert pairs == sorted((label, str(seed)) for label in ("softmax", "lenet") for seed in range(3))
    assert {r.info.status for r in runs} == {"FINISHED"}
    parents = {r.data.tags["mlflow.parentRunId"] for r in children}
    assert len(parents) == 1 and len([r for r in runs if r.data.tags.get("bench.kind") == "suite"]) == 1
    assert {r.data.tags["bench.pid"] for r in children} == pids(ran[0])  # both machines trained
    assert all(r.info.artifact_uri.startswith("mlflow-artifacts:/") for r in runs)


def test_the_search_counts_its_trials_once_and_registers_one_model(client, ran):
    runs = runs_of(client, "deploy-search")
    trials = [r for r in runs if r.data.tags.get("bench.kind") == "trial"]
    assert len(trials) == 4 and {r.info.status for r in trials} == {"FINISHED"}
    assert {r.data.tags["bench.pid"] for r in trials} == pids(ran[1])
    versions = client.search_model_versions("name = 'deploy-search-best'")
    assert len(versions) == 1  # one machine registered the confirmed winner, the other said so
    assert client.get_model_version_by_alias("deploy-search-best", "champion").version == versions[0].version
    # The confirmation (the top config and the baseline, 2 fresh seeds each) ran once, over both machines.
    confirmation = [r for r in runs if r.data.tags.get("bench.kind") == "run"]
    pairs = sorted((r.data.tags["bench.label"], r.data.tags["bench.seed"]) for r in confirmation)
    assert len(pairs) == 4 == len(set(pairs)) and {r.info.status for r in confirmation} == {"FINISHED"}
    assert versions[0].run_id in {r.info.run_id for r in confirmation}


def test_a_third_machine_rebuilds_both_reports_and_loads_the_model(deployment, client):
    home, env = machine(deployment, "machine-c")
    for target in ("deploy-suite", "deploy-search"):
        result = subprocess.run([sys.executable, "-m", "bench", "report", target, "--out", f"reports/{target}"],
                                cwd=home, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        page = (home / "reports" / target / "index.html").read_text()
        assert "<table" in page
    assert "softmax" in (home / "reports" / "deploy-suite" / "index.html").read_text()
    assert "deploy-search-best" in (home / "reports" / "deploy-search" / "index.html").read_text()
    model = mlflow.pytorch.load_model("models:/deploy-search-best@champion")
    images = torch.rand(5, 1, 28, 28)
    assert model(images).shape == (5, 10)
    assert not (home / "cache" / "tensors").exists()  # it loaded no data set: everything came from the servers


def test_no_credential_in_any_param_tag_artifact_or_report(deployment, client):
    password = deployment["password"]
    assert password
    secrets = [password.encode(), deployment["user"][1].encode(), deployment["admin_password"].encode()]
    for experiment in ("deploy-suite", "deploy-search"):
        for run in runs_of(client, experiment):
            assert password not in repr(run.data.params) + repr(run.data.tags), run.info.run_id
            local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(
                deployment["root"] / "downloads" / run.info.run_id))
            for path in Path(local).rglob("*"):
                if path.is_file():
                    assert not any(secret in path.read_bytes() for secret in secrets), path
    for path in (deployment["root"] / "machine-c" / "reports").rglob("*"):
        if path.is_file():
            assert not any(secret in path.read_bytes() for secret in secrets), path
