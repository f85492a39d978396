"""The many-machine deployment of docs/deploy.md, on loopback: PostgreSQL behind a real
`mlflow server` with proxied artifacts, two workers that share nothing but the data root and
the servers (own working directory, own BENCH_CACHE_DIR), and a third directory that has
never seen their files rebuilding both reports and loading the registered model.

As the runbook sets it up: MLflow's database belongs to the tracking server's database user
alone, the workers' user reaches only the Optuna database, PostgreSQL checks passwords on TCP
(.ci/run starts it so), and no secret is ever on a command line."""

import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.test_server import free_port

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]

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
batch_size = 10
val_fraction = 0.02
optimizer = "momentum"

[space]
lr = { low = 0.03, high = 0.08, log = true }
width = { low = 6, high = 8 }

[confirm]
top = 1
seeds = 3
# A baseline that cannot learn in one epoch, so the confirmed winner holds against it on any machine
# and becomes the champion (a winner that does not hold registers nothing: tests/test_confirm.py).
baseline = { variant = "lenet", lr = 1e-6, label = "stalled lenet" }
"""


@pytest.fixture(scope="module")
def postgres_url() -> str:
    url = os.environ.get("BENCH_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI must start PostgreSQL and set BENCH_TEST_POSTGRES_URL (see .ci/run)")
        pytest.skip("set BENCH_TEST_POSTGRES_URL=postgresql://user:pass@127.0.0.1/db, a user with CREATEDB "
                    "CREATEROLE on a cluster that checks passwords on TCP (CI does; docs/deploy.md says how)")
    return url


class Cluster:
    """The test's administrator on the PostgreSQL of BENCH_TEST_POSTGRES_URL: fresh users and databases."""

    def __init__(self, admin_url: str) -> None:
        import sqlalchemy
        from sqlalchemy.engine import make_url

        self.admin = make_url(admin_url)
        self.engine = sqlalchemy.create_engine(self.admin, poolclass=sqlalchemy.pool.NullPool,
                                               isolation_level="AUTOCOMMIT")  # CREATE DATABASE needs it
        self.roles: list[str] = []
        self.databases: list[str] = []

    def sql(self, *statements: str) -> None:
        import sqlalchemy

        with self.engine.connect() as conn:
            for statement in statements:
                conn.execute(sqlalchemy.text(statement))

    def user(self, name: str) -> str:
        """A new login role with a random password (only hex digits: safe to quote); its password."""
        password = uuid.uuid4().hex
        # Granted to the administrator so it may make the role a database's owner (PostgreSQL 15 and 16+).
        self.sql(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'", f"GRANT {name} TO CURRENT_USER")
        self.roles.append(name)
        return password

    def database(self, name: str, owner: str | None = None) -> None:
        """A new database that only its owner (and the administrator) may connect to."""
        self.sql(f"CREATE DATABASE {name}" + (f" OWNER {owner}" if owner else ""),
                 f"REVOKE ALL ON DATABASE {name} FROM PUBLIC")
        self.databases.append(name)

    def url(self, database: str, user: str | None = None, password: str | None = None) -> str:
        """A URL without a password unless one is asked for: processes get theirs in PGPASSWORD."""
        from sqlalchemy.engine import URL

        url = URL.create(self.admin.drivername, user or self.admin.username, password, self.admin.host,
                         self.admin.port, database)
        return url.render_as_string(hide_password=False)

    def drop(self) -> None:
        for name in reversed(self.databases):
            self.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        for name in reversed(self.roles):
            self.sql(f"DROP ROLE IF EXISTS {name}")
        self.engine.dispose()


class CommandLines:
    """Every command line on this machine, read from /proc while the deployment runs (what `ps` shows)."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()  # (pid, command line)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="command-lines", daemon=True)

    def _watch(self) -> None:
        while True:
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    line = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                    self.seen.add((cmdline.parent.name, line))
                except OSError:  # the process ended meanwhile
                    pass
            if self._stop.wait(0.3):
                return

    def start(self) -> "CommandLines":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def without_credentials(env: dict[str, str]) -> dict[str, str]:
    """This environment less what only the test's administrator may hold (and bench's and MLflow's settings)."""
    return {k: v for k, v in env.items() if not k.startswith(("MLFLOW_", "BENCH_", "PG"))}


@pytest.fixture(scope="module")
def deployment(postgres_url, tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy")
    tag = uuid.uuid4().hex[:8]
    cluster = Cluster(postgres_url)
    watch = CommandLines().start()
    # docs/deploy.md section 1: one user per database; MLflow's reachable by the tracking server's user only.
    server_user, worker_user = f"bench_mlflow_{tag}", f"bench_worker_{tag}"
    server_db_password, worker_db_password = cluster.user(server_user), cluster.user(worker_user)
    cluster.database(f"mlflow_{tag}", owner=server_user)
    cluster.database(f"optuna_{tag}", owner=worker_user)
    port = free_port()
    log = open(root / "server.log", "w")
    # MLflow's built-in authentication, as docs/deploy.md runs it: settings in a file, secrets in the
    # environment, nothing secret on a command line.
    (root / "auth.ini").write_text(
        f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{root / 'basic_auth.db'}\n"
        "admin_username = admin\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "auth_cache_ttl_seconds = 60\n"
    )
    admin_password, worker_password, flask_key = uuid.uuid4().hex, uuid.uuid4().hex, uuid.uuid4().hex
    server_env = {**without_credentials(os.environ), "MLFLOW_AUTH_CONFIG_PATH": str(root / "auth.ini"),
                  "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password, "MLFLOW_FLASK_SERVER_SECRET_KEY": flask_key,
                  "PGPASSWORD": server_db_password}
    server_argv = [shutil.which("mlflow", path=str(BIN)) or "mlflow", "server", "--app-name", "basic-auth", "--host",
                   "127.0.0.1", "--port", str(port), "--workers", "1",
                   "--backend-store-uri", cluster.url(f"mlflow_{tag}", server_user),
                   "--artifacts-destination", str(root / "artifact-store")]
    server = subprocess.Popen(server_argv, stdout=log, stderr=subprocess.STDOUT, cwd=root, env=server_env)
    tracking_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(f"{tracking_url}/health", timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                watch.stop()
                cluster.drop()
                pytest.fail("mlflow server did not start: " + (root / "server.log").read_text()[-3000:])
            time.sleep(0.5)
    # The workers' own user, made by the admin as docs/deploy.md does it (in this process: no command line).
    from mlflow.server import get_app_client

    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        env.setenv("MLFLOW_TRACKING_PASSWORD", admin_password)
        get_app_client("basic-auth", tracking_uri=tracking_url).create_user("bench-worker", worker_password)
    yield {"tracking": tracking_url, "root": root, "cluster": cluster, "tag": tag, "watch": watch,
           "optuna": cluster.url(f"optuna_{tag}", worker_user), "argv": [server_argv],
           "db": {"server": (server_user, server_db_password), "worker": (worker_user, worker_db_password)},
           "user": ("bench-worker", worker_password),
           "secrets": [server_db_password, worker_db_password, admin_password, worker_password, flask_key,
                       cluster.admin.password]}
    watch.stop()
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
    cluster.drop()


def machine(deployment, name: str, password_in_url: bool = False) -> tuple[Path, dict[str, str]]:
    """A working directory and environment as on its own machine: only the servers and the data root are shared.

    ``password_in_url``: MLflow's credentials in the tracking URI (``http://user:password@host``), as
    a user may give them: everything bench prints must show it masked."""
    home = deployment["root"] / name
    (home / "studies").mkdir(parents=True)
    (home / "studies" / "deploy_suite.toml").write_text(SUITE)
    (home / "studies" / "deploy_search.toml").write_text(STUDY)
    env = without_credentials(os.environ)
    user, password = deployment["user"]
    if password_in_url:
        env.update(MLFLOW_TRACKING_URI=deployment["tracking"].replace("://", f"://{user}:{password}@"))
    else:
        env.update(MLFLOW_TRACKING_URI=deployment["tracking"], MLFLOW_TRACKING_USERNAME=user,
                   MLFLOW_TRACKING_PASSWORD=password)
    env.update(BENCH_CACHE_DIR=str(home / "cache"), BENCH_DATA_DIR=os.environ["BENCH_DATA_DIR"], OMP_NUM_THREADS="1",
               BENCH_SYSTEM_METRICS="0", BENCH_STORAGE_URL=deployment["optuna"],
               PGPASSWORD=deployment["db"]["worker"][1])
    return home, env


def on_both(deployment, command: list[str]) -> list[subprocess.Popen]:
    """The same command started at once on both worker machines; both must succeed."""
    procs = []
    for name in ("machine-a", "machine-b"):
        if name not in deployment:
            deployment[name] = machine(deployment, name, password_in_url=name == "machine-b")
        home, env = deployment[name]
        argv = [sys.executable, "-m", "bench", *command]
        deployment["argv"].append(argv)
        procs.append(subprocess.Popen(argv, cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=420)
        proc.output = out
        results.append(proc)
        assert proc.returncode == 0, out[-4000:]
    return results


@pytest.fixture(scope="module")
def ran(deployment):
    # The storage URL comes from BENCH_STORAGE_URL and its password from PGPASSWORD: no --storage on any command line.
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


def connect(deployment, database: str, user: str, password: str):
    import sqlalchemy

    url = deployment["cluster"].url(database, user, password)
    return sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool).connect()


def test_a_workers_database_credentials_cannot_reach_mlflows_tables(deployment, ran):
    import sqlalchemy

    tag = deployment["tag"]
    (server_user, server_password), (worker_user, worker_password) = deployment["db"]["server"], deployment["db"]["worker"]
    # The tracking server's user reads MLflow's tables (so they are there to be refused)...
    with connect(deployment, f"mlflow_{tag}", server_user, server_password) as conn:
        assert conn.execute(sqlalchemy.text("SELECT count(*) FROM runs")).scalar() > 0
    # ... and the workers' user its queue.
    with connect(deployment, f"optuna_{tag}", worker_user, worker_password) as conn:
        assert conn.execute(sqlalchemy.text("SELECT count(*) FROM trials")).scalar() > 0
    # The workers' credentials do not open MLflow's database: PostgreSQL refuses the connection, so no
    # table of it can be read or written, whatever the query.
    with pytest.raises(sqlalchemy.exc.OperationalError, match="permission denied for database"):
        connect(deployment, f"mlflow_{tag}", worker_user, worker_password)
    # Nor do they log in as the tracking server's user: the password is checked on TCP.
    with pytest.raises(sqlalchemy.exc.OperationalError, match="password authentication failed"):
        connect(deployment, f"mlflow_{tag}", server_user, worker_password)


def test_no_secret_on_any_command_line(deployment, ran):
    deployment["watch"].stop()
    seen = [line for _, line in deployment["watch"].seen]
    started = [" ".join(argv) for argv in deployment["argv"]]
    # The watch saw what ran: the server (and the workers it serves), both machines' suites and searches.
    assert any("mlflow" in line and "server" in line for line in seen)
    assert sum("-m bench suite" in line for line in seen) >= 2 and sum("-m bench search" in line for line in seen) >= 2
    for secret in deployment["secrets"]:
        assert secret and not any(secret in line for line in [*started, *seen]), "a secret is on a command line"


def test_the_runbook_puts_no_secret_on_a_command_line():
    """docs/deploy.md's commands: passwords come from files, prompts, stdin or the environment."""
    text = (REPO / "docs" / "deploy.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        heredoc = None
        for line in block.replace("\\\n", " ").splitlines():
            if heredoc:  # a here-document is the command's stdin, not its command line
                heredoc = None if line.strip() == heredoc else heredoc
                continue
            if (opened := re.search(r"<<-?'?(\w+)'?", line)):
                heredoc = opened.group(1)
            command = re.sub(r"(^|\s)#.*", "", line).strip()  # a comment is not run
            # Variables set or exported by the shell are its environment, not a process's command line.
            command = re.sub(r"""^(export\s.*|(\w+=("[^"]*"|'[^']*'|\S*)(\s+|$))+)""", "", command)
            if command:
                commands.append(command)
    assert len(commands) > 10  # the page's commands were found
    # SQL with a password, a JSON body with one, curl -u USER:PASSWORD, --password, a URL with a password.
    on_argv = re.compile(r"PASSWORD\s+'|\bpassword\b[\"']?\s*:|-u\s+\S+:|--password|://[^\s/@:]+:[^\s/@]+@", re.I)
    assert not [line for line in commands if on_argv.search(line)]


def test_each_machine_says_what_it_trained_and_both_see_the_whole_suite(ran):
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
    # The confirmation (the top config and the baseline, 3 fresh seeds each) ran once, over both machines.
    confirmation = [r for r in runs if r.data.tags.get("bench.kind") == "run"]
    pairs = sorted((r.data.tags["bench.label"], r.data.tags["bench.seed"]) for r in confirmation)
    assert len(pairs) == 6 == len(set(pairs)) and {r.info.status for r in confirmation} == {"FINISHED"}
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


def test_no_credential_in_any_param_tag_artifact_output_or_report(deployment, client, ran):
    secrets = [secret.encode() for secret in deployment["secrets"]]
    for experiment in ("deploy-suite", "deploy-search"):
        for run in runs_of(client, experiment):
            text = (repr(run.data.params) + repr(run.data.tags)).encode()
            assert not any(secret in text for secret in secrets), run.info.run_id
            local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(
                deployment["root"] / "downloads" / run.info.run_id))
            for path in Path(local).rglob("*"):
                if path.is_file():
                    assert not any(secret in path.read_bytes() for secret in secrets), path
    for path in (deployment["root"] / "machine-c" / "reports").rglob("*"):
        if path.is_file():
            assert not any(secret in path.read_bytes() for secret in secrets), path
    for proc in [*ran[0], *ran[1]]:
        assert not any(secret.decode() in proc.output for secret in secrets)


RACE_SUITE = """\
[suite]
name = "race-suite"
dataset = "mnist"
seeds = [0, 1, 2]

[defaults]
max_train_samples = 300
batch_size = 50

[profiles.quick]
epochs = 1

[[variants]]
variant = "softmax"

[[variants]]
variant = "lenet"
"""


def test_machines_started_together_on_empty_databases_all_come_up_and_share_the_work(postgres_url, tmp_path):
    """Three processes at the same moment on a brand-new MLflow database (a direct postgresql:// tracking
    URI, no server: MLflow creates its tables from the first process that calls) and a new Optuna storage."""
    import sqlalchemy

    cluster = Cluster(postgres_url)
    tag = uuid.uuid4().hex[:8]
    try:
        cluster.database(f"race_mlflow_{tag}")
        cluster.database(f"race_optuna_{tag}")
        (tmp_path / "race.toml").write_text(RACE_SUITE)
        env = {**without_credentials(os.environ), "MLFLOW_TRACKING_URI": cluster.url(f"race_mlflow_{tag}"),
               "PGPASSWORD": cluster.admin.password, "BENCH_CACHE_DIR": str(tmp_path / "cache"),
               "BENCH_DATA_DIR": os.environ["BENCH_DATA_DIR"], "OMP_NUM_THREADS": "1"}
        argv = [sys.executable, "-m", "bench", "suite", "race.toml", "--storage", cluster.url(f"race_optuna_{tag}"),
                "--threads", "1", "--quiet", "--no-log-model", "--no-checkpoint", "--no-system-metrics"]
        assert cluster.admin.password not in " ".join(argv)
        procs = [subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True) for _ in range(3)]
        outputs = [proc.communicate(timeout=300)[0] for proc in procs]
        for proc, out in zip(procs, outputs):
            assert proc.returncode == 0, out[-4000:]
        trained = [int(re.search(r"(\d+) trained here", out).group(1)) for out in outputs]
        assert sum(trained) == 6 and sum(n > 0 for n in trained) > 1, trained  # shared, not one machine's work
        engine = sqlalchemy.create_engine(cluster.url(f"race_mlflow_{tag}", password=cluster.admin.password),
                                          poolclass=sqlalchemy.pool.NullPool)
        with engine.connect() as conn:
            children = conn.execute(sqlalchemy.text(
                "SELECT r.status, label.value, seed.value FROM runs r "
                "JOIN tags kind ON kind.run_uuid = r.run_uuid AND kind.key = 'bench.kind' AND kind.value = 'run' "
                "JOIN tags label ON label.run_uuid = r.run_uuid AND label.key = 'bench.label' "
                "JOIN tags seed ON seed.run_uuid = r.run_uuid AND seed.key = 'bench.seed'")).all()
        engine.dispose()
        assert sorted((label, seed) for _, label, seed in children) == sorted(
            (label, str(seed)) for label in ("lenet", "softmax") for seed in range(3))  # each pair exactly once
        assert {status for status, _, _ in children} == {"FINISHED"}
    finally:
        cluster.drop()
