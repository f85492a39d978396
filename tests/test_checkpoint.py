"""Checkpoints: a killed run resumes where it stopped, bit for bit on CPU; foreign or corrupt ones are refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from bench import checkpoint as ckpt
from bench import tracking
from bench.config import TrainConfig
from bench.runner import run_tracked
from bench.suites import load_suite, run_suite
from bench.train import train

REPO = Path(__file__).resolve().parents[1]
# Dropout draws from the global RNG every step, so resuming must restore it exactly.
CLI_ARGS = ["--variant", "net-dropout", "--dataset", "cifar2", "--epochs", "6", "--max-train-samples", "1500",
            "--checkpoint-every", "1", "--threads", "1", "--experiment", "checkpoint-kill"]


def _bench(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "bench", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=os.getcwd(), **kwargs)


def _run_id(output: str) -> str:
    return output.split("mlflow: run ", 1)[1].split()[0]


def _state(run_id: str) -> dict[str, torch.Tensor]:
    return tracking.load_model(run_id).state_dict()


def test_sigkilled_train_resumes_to_the_uninterrupted_result():
    client = MlflowClient()
    whole = _bench("train", *CLI_ARGS)
    out, _ = whole.communicate(timeout=240)
    assert whole.returncode == 0, out
    reference_id = _run_id(out)

    victim = _bench("train", *CLI_ARGS)
    seen = []
    for line in victim.stdout:  # kill it after epoch 3 ends: checkpoints of epochs 1-2 (maybe 3) exist
        seen.append(line)
        if line.startswith("epoch   3"):
            victim.send_signal(signal.SIGKILL)
            break
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL, "".join(seen)
    killed = client.search_runs(
        [client.get_experiment_by_name("checkpoint-kill").experiment_id], "attributes.status = 'RUNNING'"
    )
    assert len(killed) == 1
    killed_id = killed[0].info.run_id
    assert int(killed[0].data.tags[tracking.TAG_CHECKPOINT_EPOCH]) >= 2

    resumed = _bench("train", "--resume", killed_id, "--threads", "1")
    out, _ = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, out
    assert "resumed after epoch" in out
    assert client.get_run(killed_id).data.tags[tracking.TAG_RESUMED] == killed[0].data.tags[tracking.TAG_CHECKPOINT_EPOCH]

    run, reference = client.get_run(killed_id), client.get_run(reference_id)
    assert run.info.status == "FINISHED"
    for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
        steps = [m.step for m in client.get_metric_history(killed_id, key)]
        assert steps == [1, 2, 3, 4, 5, 6], (key, steps)  # every epoch exactly once
        assert run.data.metrics[key] == reference.data.metrics[key]
    assert run.data.metrics["test_acc"] == reference.data.metrics["test_acc"]
    mine, theirs = _state(killed_id), _state(reference_id)
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert ckpt.local_checkpoint(killed_id) is None  # a FINISHED run keeps no local checkpoint


def test_resume_refuses_a_run_without_a_checkpoint_and_a_finished_run():
    config = TrainConfig(variant="softmax", dataset="mnist", epochs=1, max_train_samples=300).resolve()
    run_id, _ = run_tracked(config, experiment_id=tracking.experiment_id_for("checkpoint-misc", "x"), log_model=False)
    done = subprocess.run([sys.executable, "-m", "bench", "train", "--resume", run_id], capture_output=True, text=True)
    assert done.returncode == 2 and "already FINISHED" in done.stderr

    with pytest.raises(ckpt.CheckpointError, match="no checkpoint"):
        run_tracked(config, resume_run_id=run_id, checkpoints=None)


def _checkpoint_of(config: TrainConfig, folder: Path) -> Path:
    checkpointer = ckpt.Checkpointer("key", ckpt.Policy(1), root=folder)
    train(config, checkpointer=checkpointer, progress=False)
    return checkpointer.folder / ckpt.LAST


def test_foreign_checkpoint_is_refused_naming_what_differs(tmp_path):
    config = TrainConfig(variant="mlp", dataset="mnist", epochs=2, max_train_samples=300, seed=0).resolve()
    path = _checkpoint_of(config, tmp_path)
    assert torch.load(path, weights_only=True)["epoch"] == 1
    for other, word in ((config.__class__(**{**config.__dict__, "seed": 1}), "seed"),
                        (config.__class__(**{**config.__dict__, "knobs": {**config.knobs, "width": 32}}), "knob.width"),
                        (config.__class__(**{**config.__dict__, "max_train_samples": 299}), "data.train")):
        with pytest.raises(ckpt.CheckpointError, match=f"another configuration.*{word}"):
            train(other, resume_from=path, progress=False)


def test_a_checkpoint_from_another_kind_of_device_is_refused_before_any_training(tmp_path, monkeypatch):
    """A CUDA run continued on the CPU would restore a batch-order generator state of another size (a
    bare RuntimeError) and switch from bf16 to fp32 unnoticed: it is refused, naming both devices."""
    config = TrainConfig(variant="mlp", dataset="mnist", epochs=2, max_train_samples=300, seed=0).resolve()
    path = _checkpoint_of(config, tmp_path)
    state = torch.load(path, weights_only=True)
    assert (state["identity"]["device_type"], state["identity"]["compute_dtype"]) == ("cpu", "float32")
    state["identity"].update(device_type="cuda", compute_dtype="bfloat16")  # as a GPU worker would have written it
    torch.save(state, path)
    import bench.train as train_module

    monkeypatch.setattr(train_module, "_train_epoch", lambda *a, **k: pytest.fail("training started"))
    with pytest.raises(ckpt.CheckpointError, match=r"written on cuda \(bfloat16\); this run is on cpu \(float32\)"):
        train(config, resume_from=path, progress=False)


def test_corrupt_or_alien_checkpoint_is_refused(tmp_path):
    config = TrainConfig(variant="softmax", dataset="mnist", epochs=2, max_train_samples=300).resolve()
    good = _checkpoint_of(config, tmp_path)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ckpt.CheckpointError, match="not a readable bench checkpoint"):
        train(config, resume_from=truncated, progress=False)
    alien = tmp_path / "alien.pt"
    torch.save({"weights": torch.zeros(3)}, alien)
    with pytest.raises(ckpt.CheckpointError, match="not a bench checkpoint"):
        train(config, resume_from=alien, progress=False)


def test_checkpointer_keeps_two_files_and_policies_parse(tmp_path):
    checkpointer = ckpt.Checkpointer("run", ckpt.Policy(2), root=tmp_path)
    for epoch in range(1, 5):
        checkpointer.save({"format": ckpt.FORMAT, "epoch": epoch})
    assert sorted(p.name for p in checkpointer.folder.iterdir()) == [ckpt.LAST, ckpt.PREVIOUS]
    assert ckpt.load(checkpointer.folder / ckpt.LAST)["epoch"] == 4
    assert ckpt.load(checkpointer.folder / ckpt.PREVIOUS)["epoch"] == 3
    assert [checkpointer.due(e, 1.0, final=e == 5) for e in range(1, 6)] == [False, True, False, True, False]

    auto = ckpt.Checkpointer("auto", ckpt.Policy.parse("auto"), root=tmp_path)
    assert auto.due(1, 0.5, final=False)  # nothing known yet: the first one measures the cost
    auto.save({"format": ckpt.FORMAT})
    auto.record_cost(0.01)  # 10 ms: the next is due after 100 x 10 ms = 1 s of training
    assert [auto.due(e, 0.4, final=False) for e in (2, 3, 4)] == [False, False, True]
    with pytest.raises(ValueError, match="accepted: auto or an integer >= 1"):
        ckpt.Policy.parse("0")


def test_interrupted_suite_child_resumes_in_the_same_run(tmp_path):
    suite_file = tmp_path / "tiny.toml"
    suite_file.write_text(
        '[suite]\nname = "tiny-resume"\ndataset = "mnist"\n\n[defaults]\nmax_train_samples = 400\nepochs = 4\n\n'
        '[profiles.quick]\n\n[[variants]]\nvariant = "softmax"\n\n[[variants]]\nvariant = "mlp"\n'
    )
    suite = load_suite(suite_file)

    class CtrlC:
        def on_epoch_end(self, m):
            if m.epoch == 3:
                raise KeyboardInterrupt

    def interrupt_mlp(row, config):
        return [CtrlC()] if row.label == "mlp" else []

    policy = ckpt.Policy(1)
    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, "quick", callbacks_for=interrupt_mlp, checkpoints=policy, log_models=False, echo=lambda s: None)
    children = tracking.child_runs(run_suite_parent := tracking.find_runs(
        filter_string="tags.`bench.suite` = 'tiny-resume'").query("`tags.bench.kind` == 'suite'")["run_id"].iloc[0])
    killed = children[children["tags.bench.label"] == "mlp"]
    assert killed["status"].tolist() == ["KILLED"]
    killed_id = killed["run_id"].iloc[0]

    lines: list[str] = []
    outcome = run_suite(suite, "quick", resume=True, checkpoints=policy, log_models=False, echo=lines.append)
    assert outcome.parent_run_id == run_suite_parent
    assert outcome.skipped == 1 and outcome.ran == 1
    assert any(f"resuming run {killed_id}" in line for line in lines)
    run = MlflowClient().get_run(killed_id)
    assert run.info.status == "FINISHED"
    assert [m.step for m in MlflowClient().get_metric_history(killed_id, "val_acc")] == [1, 2, 3, 4]
    assert list(outcome.summary["n_seeds"]) == [1, 1]
