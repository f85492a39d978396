import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from bench import tracking
from bench.config import TrainConfig
from bench.models import Normalize
from bench.train import NonFiniteLossError, train


def tiny(**overrides) -> TrainConfig:
    settings = dict(variant="net", dataset="cifar2", epochs=3, max_train_samples=256)
    settings.update(overrides)
    return TrainConfig(**settings)


def tracked_train(config: TrainConfig, log_model: bool = True, experiment: str = "tests"):
    experiment_id = tracking.experiment_id_for(experiment, experiment)
    with tracking.tracked_run(experiment_id=experiment_id, run_name="t") as run_id:
        result = train(config, [tracking.MlflowLogger(run_id, log_model=log_model)], progress=False)
    return run_id, result


@pytest.fixture(scope="module")
def logged():
    return tracked_train(tiny(), log_model=True)


def test_params_are_the_whole_resolved_config_verbatim(logged):
    run_id, result = logged
    params = MlflowClient().get_run(run_id).data.params
    expected = {k: str(v) for k, v in result.config.to_flat_dict().items()}
    assert {k: params[k] for k in expected} == expected
    assert params["num_parameters"] == "18090"
    assert params["optimizer"] == "sgd" and params["lr"] == "0.01" and params["knob.width"] == "16"


def test_one_metric_value_per_epoch_matching_the_trainer(logged):
    run_id, result = logged
    client = MlflowClient()
    for name in ("train_loss", "train_acc", "val_loss", "val_acc", "epoch_time_s", "images_per_s"):
        history = client.get_metric_history(run_id, name)
        assert [m.step for m in history] == [1, 2, 3]
        assert [m.value for m in history] == pytest.approx([getattr(e, name) for e in result.history])
    metrics = client.get_run(run_id).data.metrics
    assert metrics["test_acc"] == pytest.approx(result.test_acc)
    assert metrics["test_loss"] == pytest.approx(result.test_loss)


def test_hardware_tags_and_achieved_gflops(logged):
    run_id, result = logged
    run = MlflowClient().get_run(run_id)
    tags, metrics = run.data.tags, run.data.metrics
    for key in ("hw.cpu", "hw.cpu_isa", "hw.logical_cores", "hw.torch_threads", "hw.memory_gib", "hw.machine"):
        assert tags[key], key
    assert int(tags["hw.logical_cores"]) >= 1 and float(tags["hw.memory_gib"]) > 0
    flop = float(tags["bench.flop_per_image"])
    assert flop > 1e6  # net: ~1.6 MFLOP forward per 32x32 image, ~3x that with backward
    last = result.history[-1]
    assert metrics["train_gflops"] == pytest.approx(flop * last.images_per_s / 1e9, rel=1e-4)
    assert metrics["gemm_fraction"] == pytest.approx(metrics["train_gflops"] / float(tags["bench.peak_gflops"]), rel=1e-2)
    assert 0 < metrics["gemm_fraction"] < 1.5


def test_train_val_and_test_splits_are_logged_as_datasets_with_their_digests(logged):
    run_id, result = logged
    inputs = MlflowClient().get_run(run_id).inputs.dataset_inputs
    by_context = {next(t.value for t in i.tags if t.key == "mlflow.data.context"): i.dataset for i in inputs}
    assert set(by_context) == {"training", "validation", "test"}
    assert by_context["training"].name == "cifar2/train"
    from bench.train import load_data

    data = load_data(result.config)
    assert by_context["training"].digest == data.train.digest()
    assert by_context["validation"].digest == data.val.digest()
    assert by_context["test"].digest == data.test.digest()
    assert "CIFAR-10-images" in by_context["training"].source
    # A different subset is different data, and its runs can be told apart by digest.
    other = load_data(TrainConfig(**{**result.config.__dict__, "max_train_samples": 255}))
    assert other.train.digest() != data.train.digest() and other.test.digest() == data.test.digest()
    found = mlflow.search_runs(search_all_experiments=True,
                               filter_string=f"dataset.digest = '{data.train.digest()}'")
    assert run_id in set(found["run_id"])


def test_system_metrics_are_sampled_into_the_run():
    import time

    class Slow:  # the monitor samples every 2 s: give it a few samples
        def on_epoch_end(self, metrics):
            time.sleep(1.6)

    experiment_id = tracking.experiment_id_for("tests", "tests")
    with tracking.tracked_run(experiment_id=experiment_id, run_name="sysmetrics") as run_id:
        train(tiny(epochs=3), [Slow(), tracking.MlflowLogger(run_id, log_model=False)], progress=False)
    metrics = MlflowClient().get_run(run_id).data.metrics
    system = {k for k in metrics if k.startswith("system/")}
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= system, system
    assert len(MlflowClient().get_metric_history(run_id, "system/cpu_utilization_percentage")) >= 2


def test_no_system_metrics_turns_the_monitor_off(monkeypatch):
    monkeypatch.setenv(tracking.SYSTEM_METRICS_ENV, "0")
    experiment_id = tracking.experiment_id_for("tests", "tests")
    with tracking.tracked_run(experiment_id=experiment_id, run_name="quiet") as run_id:
        import time

        time.sleep(2.5)
    assert not [k for k in MlflowClient().get_run(run_id).data.metrics if k.startswith("system/")]


def test_tags_name_variant_data_and_environment(logged):
    run_id, _ = logged
    tags = MlflowClient().get_run(run_id).data.tags
    assert tags[tracking.TAG_VARIANT] == "net" and tags[tracking.TAG_DATASET] == "cifar2"
    assert tags["torch.version"] == torch.__version__
    assert tags["bench.git_commit"] != "" and tags["device"].startswith("cpu")
    assert "JPEG" in tags[tracking.TAG_DATA_SOURCE]
    assert MlflowClient().get_run(run_id).info.status == "FINISHED"


def test_logged_model_loads_back_and_predicts_the_same(logged, data_root):
    run_id, result = logged
    assert tracking.logged_models(run_id) == [tracking.MODEL_NAME]
    x = result.input_example
    expected = Normalize(result.mean, result.std, result.model).eval()(x).detach()
    loaded = tracking.load_model(run_id)
    assert torch.allclose(loaded(x), expected, atol=1e-5)
    pyfunc = mlflow.pyfunc.load_model(tracking.model_uri(run_id))
    batch = np.random.default_rng(0).random((7, 3, 32, 32), dtype=np.float32)  # any batch size
    assert pyfunc.predict(batch).shape == (7, 2)
    assert np.allclose(pyfunc.predict(x.numpy()), expected.numpy(), atol=1e-5)


def test_no_log_model_skips_the_model():
    run_id, _ = tracked_train(tiny(epochs=1), log_model=False)
    assert tracking.logged_models(run_id) == []


def test_exception_marks_the_run_failed_with_the_error_as_a_tag():
    experiment_id = tracking.experiment_id_for("tests", "tests")
    with pytest.raises(NonFiniteLossError):
        with tracking.tracked_run(experiment_id=experiment_id) as run_id:
            train(tiny(variant="mlp", lr=1e12, epochs=2), [tracking.MlflowLogger(run_id)], progress=False)
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FAILED"
    assert "NonFiniteLossError: loss became" in run.data.tags[tracking.TAG_ERROR]
    assert mlflow.active_run() is None


def test_ctrl_c_marks_the_run_killed_and_keeps_finished_epochs():
    class CtrlC:
        def on_epoch_end(self, metrics):
            if metrics.epoch == 2:
                raise KeyboardInterrupt

    experiment_id = tracking.experiment_id_for("tests", "tests")
    with pytest.raises(KeyboardInterrupt):
        with tracking.tracked_run(experiment_id=experiment_id) as run_id:
            train(tiny(epochs=5), [tracking.MlflowLogger(run_id), CtrlC()], progress=False)
    client = MlflowClient()
    assert client.get_run(run_id).info.status == "KILLED"
    assert [m.step for m in client.get_metric_history(run_id, "val_acc")] == [1, 2]


def test_credentials_never_reach_params_or_tags():
    assert tracking.redact("postgresql://bench:hunter2@db:5432/optuna") == "postgresql://bench:***@db:5432/optuna"
    assert tracking.redact("/plain/path") == "/plain/path"
    run_id, _ = tracked_train(tiny(epochs=1, data_dir=None), log_model=False)
    tracking.set_tags(run_id, {"storage": "postgresql://u:hunter2@h/db"})
    run = MlflowClient().get_run(run_id)
    assert "hunter2" not in str(run.data.params) + str(run.data.tags)


def test_a_run_under_mlflow_run_nests_under_its_run(monkeypatch):
    experiment_id = tracking.experiment_id_for("tests", "tests")
    outer = MlflowClient().create_run(experiment_id).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", outer)
    with tracking.tracked_run(experiment_id=experiment_id) as run_id:
        pass
    assert run_id != outer
    assert MlflowClient().get_run(run_id).data.tags[tracking.PARENT_TAG] == outer


def test_stale_children_are_the_ones_whose_process_died():
    import os
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid is free now (reuse within the test is vanishingly unlikely)
    experiment_id = tracking.experiment_id_for("stale", "stale")
    client = MlflowClient()
    with tracking.tracked_run(experiment_id=experiment_id, run_name="parent") as parent:
        owners = {"alive": str(os.getpid()), "dead": str(dead.pid), "untagged": None}
        ids = {}
        for name, pid in owners.items():
            run = client.create_run(experiment_id, run_name=name, tags={tracking.PARENT_TAG: parent})
            if pid is not None:
                tracking.set_tags(run.info.run_id, {tracking.TAG_HOST: __import__("socket").gethostname(),
                                                    tracking.TAG_PID: pid})
            ids[name] = run.info.run_id
        marked = tracking.mark_stale_children(parent)
    assert sorted(marked) == sorted([ids["dead"], ids["untagged"]])
    assert client.get_run(ids["alive"]).info.status == "RUNNING"  # another worker's run is left alone
    assert client.get_run(ids["dead"]).data.tags[tracking.TAG_ERROR].startswith("stale")
    client.set_terminated(ids["alive"])


@pytest.mark.parametrize("text, secret, shown", [
    ("postgresql://bench:hunter2@db-host:5432/optuna", "hunter2", "postgresql://bench:***@db-host:5432/optuna"),
    ("storage postgresql+psycopg://bench@db/optuna?password=hunter2&sslmode=require failed",
     "hunter2", "postgresql+psycopg://bench@db/optuna?password=***&sslmode=require failed"),
    ("http://admin:hunter2@tracking:5000/api", "hunter2", "http://admin:***@tracking:5000/api"),
    ("mysql://u@h/db?passwd=hunter2", "hunter2", "mysql://u@h/db?passwd=***"),
    # Schemes no URL parser knows, and URLs that no parser accepts.
    ("artifacts at mlflow-artifacts://bench:hunter2@tracking/x/y", "hunter2",
     "artifacts at mlflow-artifacts://bench:***@tracking/x/y"),
    ("my-db://u:hunter2@h", "hunter2", "my-db://u:***@h"),
    ("redis://:hunter2@cache:6379/0", "hunter2", "redis://:***@cache:6379/0"),
    # A raw "@" or "/" in the password: none of it is left.
    ("postgresql://u:hun@ter2@h/db", "ter2", "postgresql://u:***@h/db"),
    ("postgresql://u:hun/ter2@h/db?sslmode=require", "ter2", "postgresql://u:***@h/db?sslmode=require"),
    ("postgresql://u:p@ss/w0rd@h:5432/db", "w0rd", "postgresql://u:***@h:5432/db"),
    # A user with an "@" (as some hosted PostgreSQL services name them).
    ("postgresql://bench@server:hunter2@server.example.org/db", "hunter2",
     "postgresql://bench@server:***@server.example.org/db"),
    # Secret-looking query parameters, whatever the URL.
    ("https://h/x?api_key=hunter2&page=2", "hunter2", "https://h/x?api_key=***&page=2"),
    ("https://h/x?apiKey=hunter2#top", "hunter2", "https://h/x?apiKey=***#top"),
    ("https://h/x?api-key=hunter2", "hunter2", "https://h/x?api-key=***"),
    ("https://h/x?access_token=hunter2&sort=asc", "hunter2", "https://h/x?access_token=***&sort=asc"),
    ("https://maps.example.org/v1?key=hunter2", "hunter2", "https://maps.example.org/v1?key=***"),
    ("https://b.blob.example.net/c/f?sv=2024&sig=hunter2", "hunter2", "https://b.blob.example.net/c/f?sv=2024&sig=***"),
    ("https://s3.example.com/b/k?X-Amz-Credential=AKIA1&X-Amz-Signature=hunter2&X-Amz-Date=20260101", "hunter2",
     "https://s3.example.com/b/k?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Date=20260101"),
    ("https://h/cb?client_secret=hunter2&state=ok", "hunter2", "https://h/cb?client_secret=***&state=ok"),
    # libpq key=value connection strings, plain and quoted.
    ("host=db user=bench password=hunter2 dbname=optuna", "hunter2", "host=db user=bench password=*** dbname=optuna"),
    ("host=db user=bench password='hun ter2' dbname=optuna", "ter2", "host=db user=bench password=*** dbname=optuna"),
    (r"host=db password='it\'s hunter2' port=5432", "hunter2", "host=db password=*** port=5432"),
    (r"host=db password=hun\ ter2 port=5432", "ter2", "host=db password=*** port=5432"),
    ("connection failed (host=db sslpassword=hunter2).", "hunter2", "(host=db sslpassword=***)."),
    # A libpq string quoted inside another value (a repr, a keyword argument) is masked inside.
    ("Connection(dsn='host=db user=u password=hunter2')", "hunter2", "Connection(dsn='host=db user=u password=***')"),
    ('conninfo="host=db password=hunter2"', "hunter2", 'conninfo="host=db password=***"'),
    # Quoted mappings (a JSON body, a dict in an error) and HTTP headers.
    ('{"username": "bench-worker", "password": "hunter2"}', "hunter2",
     '{"username": "bench-worker", "password": "***"}'),
    ("headers {'Authorization': 'Bearer hunter2'}", "hunter2", "{'Authorization': '***'}"),
    ("Authorization: Basic aHVudGVyMg== sent", "aHVudGVyMg", "Authorization: Basic *** sent"),
])
def test_credentials_are_masked_in_every_url_form(text, secret, shown):
    masked = tracking.redact(text)
    assert secret not in masked and shown in masked
    assert tracking.redact(masked) == masked  # masking twice (a tag of a masked message) changes nothing


def test_urls_with_nothing_to_hide_are_left_exactly_as_written():
    for text in ("http://127.0.0.1:5000/#/experiments/1/runs/abc", "optuna/suites/x.journal", "no url here",
                 "postgresql://bench@db-host:5432/optuna?sslmode=require", "models:/deploy-search-best@champion",
                 "sorted by key=val_acc, sig=0.05", "host=db user=bench dbname=optuna"):
        assert tracking.redact(text) == text


def test_masking_takes_linear_time_on_hostile_text():
    import time

    started = time.perf_counter()
    for text in ("x://a:" * 20000, "a." * 100000 + "://", "?token=a" + ")" * 100000 + "b", "password=" + "a" * 100000):
        tracking.redact(text)
    assert time.perf_counter() - started < 2  # a backtracking pattern takes minutes on these


def test_the_tracking_uri_is_shown_masked(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://bench:hunter2@db-host/mlflow")
    assert tracking.tracking_uri() == "postgresql://bench:***@db-host/mlflow"


def test_every_value_a_report_page_prints_is_masked():
    from bench.report import pages

    page = pages._TEMPLATES.from_string(
        '{% import "macros.html.j2" as m %}<p>{{ store }}</p><p>{{ params }}</p>{{ m.image(png, note) }}'
    ).render(store="postgresql://bench:hunter2@db/mlflow", params={"storage": "https://h/x?token=hunter2"},
             png="data:image/png;base64,iVBORw0KGgo=", note="host=db password=hunter2")
    assert "hunter2" not in page
    assert "postgresql://bench:***@db/mlflow" in page and "https://h/x?token=***" in page
    assert '<img src="data:image/png;base64,iVBORw0KGgo=" alt="host=db password=***">' in page  # markup kept


@pytest.mark.parametrize("ui_url", ["javascript:alert(document.cookie)", "data:text/html,<script>x</script>",
                                    "ftp://mlflow.example.org", "//mlflow.example.org"])
def test_run_links_are_http_only(ui_url):
    from bench.report.pages import ReportError, RunLinks

    with pytest.raises(ReportError, match="accepted: an http:// or https:// address"):
        RunLinks(ui_url, "1")
    assert RunLinks("https://mlflow.example.org", "1")("abc") == "https://mlflow.example.org/#/experiments/1/runs/abc"


@pytest.mark.parametrize("argv", [["report", "deploy-suite"], ["diff", "a", "b"], ["suite", "studies/x.toml"],
                                  ["search", "studies/x_search.toml"]])
def test_a_ui_url_that_is_not_http_is_a_usage_error(argv, capsys):
    from bench.cli import main

    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--ui-url", "javascript:alert(1)"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert "--ui-url: 'javascript:alert(1)' is not accepted; accepted: an http:// or https:// address" in err


def test_an_http_ui_url_is_accepted(capsys):
    from bench.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["report", "no-such-suite", "--ui-url", "https://mlflow.example.org"])
    assert exit_.value.code == 2 and "no suite or study named 'no-such-suite'" in capsys.readouterr().err


def test_every_log_record_of_the_cli_is_masked(monkeypatch, capsys, caplog):
    import logging

    import bench.cli.train
    from bench.cli import main

    def leaky(args):
        logging.getLogger("bench.somewhere").warning("cannot reach %s", "postgresql://bench:hunter2@db/optuna")
        logging.getLogger("mlflow.somewhere").warning("retrying https://h/x?api_key=hunter2")  # MLflow's own handler
        try:
            raise RuntimeError("host=db password=hunter2")
        except RuntimeError:
            logging.getLogger("bench.somewhere").exception("failed")
        return 0

    factory = logging.getLogRecordFactory()
    monkeypatch.setattr(bench.cli.train, "cmd_list", leaky)
    try:
        with caplog.at_level(logging.INFO):
            assert main(["list"]) == 0
    finally:
        logging.setLogRecordFactory(factory)
    err = capsys.readouterr().err
    assert "WARNING mlflow.somewhere: retrying https://h/x?api_key=***" in err
    assert "cannot reach postgresql://bench:***@db/optuna" in caplog.text
    assert "RuntimeError: host=db password=***" in caplog.text
    assert "hunter2" not in err + caplog.text


def test_a_cli_error_is_masked(capfd, monkeypatch):
    from bench.cli import main
    from tests.test_server import free_port

    # MLflow's own error names the tracking server's URL, credentials and all; nothing listens there.
    url = f"http://bench:hunter2@127.0.0.1:{free_port()}/mlflow"
    for name, value in {"MLFLOW_TRACKING_URI": url, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                        "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}.items():
        monkeypatch.setenv(name, value)
    assert main(["report", "deploy-suite"]) == 1
    out, err = capfd.readouterr()
    assert "hunter2" not in out + err
    assert "API request to http://bench:***@127.0.0.1:" in err  # what failed, and where, is still said


def test_a_trials_fail_reason_is_masked(tmp_path):
    import optuna

    from bench.workqueue import open_storage, trials

    storage = open_storage(str(tmp_path / "q.journal"))
    study = optuna.create_study(storage=storage, study_name="masking")
    trial = trials.claim(study, str(tmp_path / "q.journal"), total=1)

    def work(_):
        raise RuntimeError("cannot reach postgresql://bench:hunter2@db/optuna")

    frozen = trials.run(study, storage, trial, work)
    assert frozen.state.name == "FAIL" and "hunter2" not in frozen.user_attrs["fail_reason"]
    assert "postgresql://bench:***@db/optuna" in frozen.user_attrs["fail_reason"]
