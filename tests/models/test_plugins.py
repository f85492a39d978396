"""Your own variants: from an installed package's entry point, or a file named on the command line.

Nothing is installed globally: a package with a ``.dist-info`` (its ``entry_points.txt``) is put on
``sys.path`` (and ``PYTHONPATH``, for worker processes) for the tests of this module only.
"""

from __future__ import annotations

import hashlib
import os
import re
import statistics
import sys
import textwrap

import pytest
import scipy.stats
from mlflow.tracking import MlflowClient

from bench import tracking
from bench.cli import main
from bench.models import _registry, plugins

PLUG_NET = '''
"""A plugin's variant, as a user would write it."""
from torch import nn

import bench


@bench.register_variant(
    "plug-net",
    description="a two-layer perceptron from a plugin package",
    origin="tests/models/test_plugins.py",
    knobs={"hidden": bench.Knob(16, "hidden units", low=1), "dropout": bench.Knob(0.0, "dropout", kind=float, low=0.0, high=1.0)},
    train_defaults={"optimizer": "sgd", "lr": 0.05},
)
def plug_net(shape, hidden, dropout):
    return nn.Sequential(nn.Flatten(), nn.Linear(shape.channels * shape.size ** 2, hidden), nn.ReLU(),
                         nn.Dropout(dropout), nn.Linear(hidden, shape.num_classes))


def needs_a_gpu(shape):
    raise RuntimeError("this plugin builds only on a GPU")
'''

SUITE = """\
[suite]
name = "{name}"
dataset = "mnist"
seeds = [0, 1]
baseline = "net"

[defaults]
max_train_samples = 600
batch_size = 50

[profiles.quick]
epochs = 1

[[variants]]
variant = "net"

[[variants]]
variant = "{variant}"
"""

STUDY = """\
[study]
name = "{name}"
dataset = "mnist"
variant = "{variant}"
epochs = 1
n_trials = 2
pruner = "none"

[training]
max_train_samples = 300
batch_size = 50

[space]
hidden = {{ low = 4, high = 32, log = true }}
"""


@pytest.fixture(scope="module")
def plugin_package(tmp_path_factory):
    """An importable package ``benchplug`` declaring ``plug-net``, a ``broken-net`` that cannot be imported, a
    ``gpu-net`` whose builder raises, and a ``net`` that a built-in already has.

    ``gpu-net`` sorts before ``plug-net`` and lives in the same module: listing imports that module for
    ``gpu-net`` first, so ``plug-net`` must find its declaration without a second import."""
    root = tmp_path_factory.mktemp("site")
    (root / "benchplug").mkdir()
    (root / "benchplug" / "__init__.py").write_text("")
    (root / "benchplug" / "nets.py").write_text(PLUG_NET)
    (root / "benchplug" / "broken.py").write_text("raise ImportError('this plugin needs a library you do not have')\n")
    info = root / "benchplug-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: benchplug\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(
        "[bench.variants]\nplug-net = benchplug.nets:plug_net\nbroken-net = benchplug.broken:net\nnet = benchplug.nets:plug_net\n"
        "gpu-net = benchplug.nets:needs_a_gpu\n"
    )
    sys.path.insert(0, str(root))
    plugins.reload_entry_points()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PYTHONPATH", str(root))  # worker processes find it too
        yield root
    sys.path.remove(str(root))
    for name in [n for n, v in _registry._VARIANTS.items() if v.source != _registry.BUILT_IN]:
        del _registry._VARIANTS[name]
    plugins.reload_entry_points()


def runs_in(experiment: str):
    found = MlflowClient().get_experiment_by_name(experiment)
    return [] if found is None else MlflowClient().search_runs([found.experiment_id])


def test_an_installed_plugin_is_listed_and_a_broken_one_breaks_nothing_else(plugin_package, capsys):
    assert main(["list", "--dataset", "mnist"]) == 0
    out = capsys.readouterr().out
    # Its own line with its parameter count for mnist (784*16+16 + 16*10+10), then its knobs and package.
    assert re.search(r"(?m)^  plug-net +12,730  a two-layer perceptron from a plugin package$", out), out
    assert "knobs: hidden=16, dropout=0.0" in out and "[package benchplug 0.1.0 (entry point benchplug.nets:plug_net)]" in out
    assert re.search(r"(?m)^  broken-net +cannot be loaded: .*: importing 'benchplug.broken' failed: ImportError: "
                     r"this plugin needs a library you do not have$", out), out
    # A builder that raises when the count is taken is one line too, naming the entry point and the line.
    assert re.search(r"(?m)^  gpu-net +cannot be loaded: variant 'gpu-net' \(package benchplug 0.1.0 \(entry point "
                     r"benchplug.nets:needs_a_gpu\)\): its builder raised RuntimeError: this plugin builds only on a "
                     r"GPU \(at nets.py:\d+\)$", out), out
    assert re.search(r"(?m)^  lenet +8,490 ", out) and re.search(r"(?m)^  net-res-deep +\d", out)  # the rest as always
    # A plugin never takes a built-in's name: listing says so, and `net` stays the book's.
    assert "clashes with the built-in 'net'" in out
    from bench.models import get_variant

    assert get_variant("net").source == "built-in"


def test_a_plugin_variant_trains_and_runs_record_where_it_came_from(plugin_package, capsys):
    assert main(["train", "--variant", "plug-net", "--dataset", "mnist", "--epochs", "1", "--max-train-samples", "300",
                 "--knob", "hidden=8", "--quiet", "--experiment", "plugin-train"]) == 0
    [run] = runs_in("plugin-train")
    assert run.info.status == "FINISHED" and run.data.params["knob.hidden"] == "8"
    assert run.data.tags["bench.variant_source"] == "package benchplug 0.1.0 (entry point benchplug.nets:plug_net)"
    assert tracking.logged_models(run.info.run_id) == [tracking.MODEL_NAME]


def test_a_plugin_row_gets_a_verdict_against_net_and_a_search_over_its_knob_on_two_workers(plugin_package, tmp_path,
                                                                                           capsys):
    suite = tmp_path / "plugin-suite.toml"
    suite.write_text(SUITE.format(name="plugin-suite", variant="plug-net"))
    assert main(["suite", str(suite), "--quiet", "--no-log-model"]) == 0
    out = capsys.readouterr().out
    children = [r for r in runs_in("plugin-suite") if r.data.tags.get("bench.kind") == "run"]
    # The suite's measure (the mean val of the last epochs: here its only one), in seed order.
    val = {label: [r.data.metrics["val_acc_last_k"] * 100 for r in sorted(children, key=lambda r: r.data.tags[
        "bench.seed"]) if r.data.tags["bench.label"] == label] for label in ("net", "plug-net")}
    assert {label: len(v) for label, v in val.items()} == {"net": 2, "plug-net": 2}
    assert {r.data.tags["bench.variant_source"] for r in children if r.data.tags["bench.label"] == "plug-net"} == {
        "package benchplug 0.1.0 (entry point benchplug.nets:plug_net)"}
    # The row is judged with its own runs' numbers: mean ± sd over the seeds and the difference from net.
    mean, sd = statistics.mean(val["plug-net"]), statistics.stdev(val["plug-net"])
    diff = mean - statistics.mean(val["net"])
    numbers = re.escape(f"{mean:.2f} ± {sd:.2f}") + " +" + re.escape(f"{diff:+.2f} [")
    row = re.search(rf"(?m)^ *plug-net +2 +{numbers}.*\] +95\.0 +(\w+)", out)  # the interval at 95 %
    assert row, out
    # What these numbers must give: two seeds leave the paired t-test one degree of freedom, so not better
    # or worse at 5 % (Holm only raises the bar), and a difference beyond the ±1 pt margin is never
    # equivalent: undecided.
    test = scipy.stats.ttest_rel(val["plug-net"], val["net"])
    assert test.pvalue > 0.05 and abs(diff) > 1, (test, diff)
    assert row.group(1) == "undecided", row.group(0)
    study = tmp_path / "plugin-study.toml"
    study.write_text(STUDY.format(name="plugin-study", variant="plug-net"))
    assert main(["search", str(study), "--workers", "2", "--storage", str(tmp_path / "s.journal"), "--quiet"]) == 0
    trials = [r for r in runs_in("plugin-study") if r.data.tags.get("bench.kind") == "trial"]
    assert len(trials) == 2 and {r.info.status for r in trials} == {"FINISHED"}
    # Each of two worker processes (neither of them this one) found the plugin, as an installed package.
    assert len({r.data.tags["bench.pid"] for r in trials} - {str(os.getpid())}) == 2
    assert {r.data.tags["bench.variant_source"] for r in trials} == {
        "package benchplug 0.1.0 (entry point benchplug.nets:plug_net)"}
    assert all(4 <= int(r.data.params["knob.hidden"]) <= 32 for r in trials)


def test_a_variant_in_a_file_does_the_same_through_the_cli(tmp_path, capsys, monkeypatch):
    (tmp_path / "my_nets.py").write_text(textwrap.dedent('''
        from torch import nn


        class TinyNet(nn.Module):
            """A linear layer on the flattened image, from a file."""

            def __init__(self, shape, hidden=8):
                super().__init__()
                self.net = nn.Sequential(nn.Flatten(), nn.Linear(shape.channels * shape.size ** 2, hidden), nn.ReLU(),
                                         nn.Linear(hidden, shape.num_classes))

            def forward(self, x):
                return self.net(x)
    '''))
    monkeypatch.chdir(tmp_path)
    assert main(["list", "--variant", "./my_nets.py:TinyNet"]) == 0
    assert "A linear layer on the flattened image, from a file." in capsys.readouterr().out
    assert main(["train", "--variant", "./my_nets.py:TinyNet", "--dataset", "mnist", "--epochs", "1",
                 "--max-train-samples", "300", "--quiet", "--experiment", "file-train"]) == 0
    [run] = runs_in("file-train")
    source = run.data.tags["bench.variant_source"]
    digest = hashlib.sha256((tmp_path / "my_nets.py").read_bytes()).hexdigest()[:16]
    assert source == f"file {tmp_path / 'my_nets.py'} sha256:{digest}" and run.data.params["knob.hidden"] == "8"
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "file-suite.toml").write_text(SUITE.format(name="file-suite", variant="../my_nets.py:TinyNet"))
    assert main(["suite", "suites/file-suite.toml", "--quiet", "--no-log-model", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"(?m)^ *TinyNet +2 ", out) and "4 trained here" in out, out  # a row labelled by the class
    children = [r for r in runs_in("file-suite") if r.data.tags.get("bench.label") == "TinyNet"]
    # The workers loaded the file the suite names (relative to the suite file), not another copy.
    assert len(children) == 2 and {r.data.tags["bench.variant_source"] for r in children} == {source}
    (tmp_path / "file-study.toml").write_text(STUDY.format(name="file-study", variant="my_nets.py:TinyNet"))
    assert main(["search", "file-study.toml", "--workers", "2", "--quiet"]) == 0
    trials = [r for r in runs_in("file-study") if r.data.tags.get("bench.kind") == "trial"]
    assert len(trials) == 2 and {r.data.tags["bench.variant_source"] for r in trials} == {source}


BROKEN_STUDY = """\
[study]
name = "bad-study"
dataset = "mnist"
variant = "bad.py:Net"
epochs = 1
n_trials = 1

[space]
lr = { low = 1e-3, high = 1e-1, log = true }
"""


@pytest.mark.parametrize("code, message", [
    ("raise RuntimeError('no GPU driver here')", r"importing .*bad\.py failed: RuntimeError: no GPU driver here \(at bad\.py:1\)"),
    ("def Net(shape):\n    return 'not a model'", r"its builder returned a str, not a torch.nn.Module"),
    ("def Net(shape):\n    raise RuntimeError('this net\\nneeds a GPU')",
     r"\(file .*bad\.py sha256:[0-9a-f]{16}\): its builder raised RuntimeError: this net needs a GPU \(at bad\.py:2\)"),
    ("from torch import nn\ndef Net(shape):\n    return nn.Linear(3, shape.num_classes)",
     r"fails on a batch of 2 images of shape 1x28x28: RuntimeError: mat1 and mat2 shapes cannot be multiplied"),
    ("from torch import nn\ndef Net(shape):\n    return nn.Sequential(nn.Flatten(), nn.Linear(784, 3))",
     r"returns \(2, 3\) for a batch of 2 images; the data set has 10 classes, so \(2, 10\) is expected"),
    ("x = 1", r"it has no 'Net'; it defines nothing callable"),
], ids=["import-fails", "not-a-module", "builder-raises", "forward-raises", "wrong-output", "no-such-name"])
def test_a_broken_file_variant_is_refused_before_anything_is_trained_or_logged(code, message, tmp_path, capsys,
                                                                                monkeypatch):
    import bench.train

    (tmp_path / "bad.py").write_text(code + "\n")
    (tmp_path / "bad-suite.toml").write_text(SUITE.format(name="bad-suite", variant="bad.py:Net"))
    (tmp_path / "bad-study.toml").write_text(BROKEN_STUDY)
    monkeypatch.setattr(bench.train, "load_data", lambda *a, **k: pytest.fail("data was loaded"))
    # Refused before any run exists, not a run created and then failed.
    monkeypatch.setattr(MlflowClient, "create_run", lambda *a, **k: pytest.fail("a run was created"))
    before = len(tracking.find_runs())
    for command in (["train", "--variant", f"{tmp_path / 'bad.py'}:Net", "--dataset", "mnist", "--experiment", "bad-plugins"],
                    ["suite", str(tmp_path / "bad-suite.toml")],
                    ["search", str(tmp_path / "bad-study.toml"), "--storage", str(tmp_path / "bad.journal")]):
        with pytest.raises(SystemExit) as exit_:
            main(command)
        err = capsys.readouterr().err
        assert exit_.value.code == 2, (command, err)
        # One line that names the file and the cause, no traceback.
        assert re.search(rf"(?m)^bench: error: .*bad\.py.*{message}", err) and "Traceback" not in err, (command, err)
    assert len(tracking.find_runs()) == before  # nothing was logged
    assert not (tmp_path / "bad.journal").exists()  # nor a study stored


def test_registering_a_built_ins_name_is_refused_naming_both():
    import bench

    with pytest.raises(bench.VariantError, match=r"variant 'lenet' \(module tests.models.test_plugins\) clashes with "
                                                  r"the built-in 'lenet' \(LeNet-style CNN"):
        bench.register_variant("lenet", description="mine", origin="me")(lambda shape: None)


def test_a_run_whose_plugin_file_changed_is_not_resumed(tmp_path):
    from bench import checkpoint as ckpt
    from bench.config import TrainConfig
    from bench.train import train

    path = tmp_path / "evolving.py"
    path.write_text("from torch import nn\ndef Net(shape, hidden=8):\n"
                    "    return nn.Sequential(nn.Flatten(), nn.Linear(shape.channels * shape.size ** 2, shape.num_classes))\n")
    config = TrainConfig(variant=f"{path}:Net", dataset="mnist", epochs=2, max_train_samples=200).resolve()
    checkpointer = ckpt.Checkpointer("plugin", ckpt.Policy(1), root=tmp_path)
    train(config, checkpointer=checkpointer, progress=False)
    path.write_text(path.read_text() + "# changed after the run started\n")
    with pytest.raises(ckpt.CheckpointError, match=f"written by other code.*{path}.*The file changed since the run started"):
        train(config, resume_from=checkpointer.folder / ckpt.LAST, progress=False)
