import pytest
import torch
from torch import nn

from bench.data import DATASETS
from bench.models import (
    BUILT_IN, InputShape, Knob, Variant, VariantError, count_parameters, get_model, get_variant, list_variants, register,
)
from bench.models._registry import _VARIANTS

SHAPES = {name: info.shape for name, info in DATASETS.items()}


def test_every_seed_and_chapter_variant_is_registered():
    expected = {
        "softmax", "mlp", "lenet", "bn-cnn", "net", "net-width", "net-l2", "net-weight-decay",
        "net-dropout", "net-batchnorm", "net-depth", "net-res", "net-res-deep", "resnet-head",
    }
    assert expected <= set(list_variants())


@pytest.mark.parametrize("dataset", sorted(SHAPES))
@pytest.mark.parametrize("name", list_variants())
def test_forward_shape_on_every_dataset(name, dataset):
    shape = SHAPES[dataset]
    knobs = {"depth": 4} if name == "net-res-deep" else {}  # 100 blocks is slow for a shape check
    model = get_model(name, shape, **knobs)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(3, shape.channels, shape.size, shape.size))
    assert out.shape == (3, shape.num_classes)


@pytest.mark.parametrize("name", list_variants())
def test_one_training_step_reaches_every_trainable_parameter(name):
    shape = SHAPES["cifar2"]
    knobs = {"depth": 3} if name == "net-res-deep" else {}
    model = get_model(name, shape, **knobs)
    x = torch.randn(4, shape.channels, shape.size, shape.size)
    nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 0, 1])).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing


@pytest.mark.parametrize(
    "name, dataset, expected",
    [
        ("net", "cifar2", 18_090),
        ("net-width", "cifar2", 38_386),
        ("net-l2", "cifar2", 18_090),
        ("net-weight-decay", "cifar2", 18_090),
        ("net-dropout", "cifar2", 38_386),
        ("net-depth", "cifar2", 16_130),
        ("softmax", "mnist", 7_850),
        ("mlp", "mnist", 242_762),
        ("lenet", "mnist", 8_490),
        ("bn-cnn", "mnist", 3_720),
    ],
)
def test_exact_parameter_counts(name, dataset, expected):
    assert count_parameters(get_model(name, SHAPES[dataset])) == expected


def test_width_knob_recomputes_the_flatten_size():
    shape = SHAPES["cifar2"]
    assert count_parameters(get_model("net", shape, width=32)) == 38_386
    # A deeper net on a small image keeps a valid flatten size instead of pooling to nothing.
    model = get_model("net-depth", InputShape(1, 8, 3), depth=6)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 3)


def test_res_deep_builds_distinct_blocks_unless_asked_to_share():
    shape = SHAPES["cifar2"]
    distinct = get_model("net-res-deep", shape, depth=5)
    shared = get_model("net-res-deep", shape, depth=5, shared_blocks=True)
    block = 32 * 32 * 9 + 2 * 32  # conv without bias + BN weight and bias
    assert count_parameters(distinct) - count_parameters(shared) == 4 * block
    blocks = list(shared.resblocks)
    assert all(b is blocks[0] for b in blocks)
    assert len({id(b) for b in distinct.resblocks}) == 5
    first = distinct.resblocks[0]
    assert torch.all(first.batch_norm.weight == 0.5) and torch.all(first.batch_norm.bias == 0)


def test_resnet_head_replaces_fc_and_says_weights_are_random(caplog, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    model = get_model("resnet-head", SHAPES["cifar2"], width=64)
    assert "RANDOMLY initialised" in caplog.text
    fc = model.fc
    assert [type(m) for m in fc] == [nn.Linear, nn.ReLU, nn.Linear]
    assert fc[0].out_features == 64 and fc[2].out_features == 2


def test_resnet_head_loads_locally_cached_weights_and_freezes_the_backbone(tmp_path, monkeypatch):
    import torchvision

    from bench.models.transfer import local_checkpoint

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    reference = torchvision.models.resnet18(weights=None)
    path = local_checkpoint("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    model = get_model("resnet-head", SHAPES["cifar2"])
    assert torch.equal(model.conv1.weight, reference.conv1.weight)
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"fc"}
    assert model.bench_notes["weights"].startswith("ImageNet weights loaded from")
    # The frozen backbone's batch norm keeps ImageNet's statistics: train mode leaves it in eval.
    model.train()
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms) and model.fc.training
    before = norms[0].running_mean.clone()
    model(torch.randn(4, 3, 32, 32))
    assert torch.equal(norms[0].running_mean, before)


def test_resnet_head_says_when_its_backbone_is_random_and_then_trains_all_of_it(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # nothing cached here
    model = get_model("resnet-head", SHAPES["cifar2"])
    assert model.bench_notes["weights"].startswith("randomly initialised: no cached ImageNet weights")
    assert model.bench_notes["frozen"] == "nothing frozen"
    model.train()
    assert all(m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_duplicate_names_raise():
    with pytest.raises(ValueError, match="clashes with the built-in 'net'"):
        register("net", description="again", origin="test", knobs={})(lambda shape: nn.Identity())
    assert _VARIANTS["net"].description.startswith("baseline")


def test_unknown_variant_lists_the_accepted_ones():
    with pytest.raises(VariantError, match="unknown variant 'nope'.*net-width"):
        get_variant("nope")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"colour": 3}, "has no knob 'colour'; accepted knobs: batchnorm, depth, dropout, width"),
        ({"width": 0}, r"width=0 is out of range; accepted: an integer >= 1"),
        ({"dropout": 1.0}, r"dropout=1.0 is out of range"),
        ({"dropout": -0.1}, r"dropout=-0.1 is out of range"),
        ({"depth": 2.5}, r"depth=2.5 is not a valid int"),
        ({"batchnorm": "maybe"}, r"batchnorm='maybe' is not a valid bool"),
    ],
)
def test_bad_knobs_name_the_value_and_what_is_accepted(overrides, message):
    with pytest.raises(VariantError, match=message):
        get_model("net", SHAPES["cifar2"], **overrides)


def test_knob_choices_are_enforced():
    knob = Knob("a", "pick", kind=str, choices=("a", "b"))
    assert knob.check("k", "b") == "b"
    with pytest.raises(VariantError, match="accepted: a, b"):
        knob.check("k", "c")


def _needs_a_gpu(shape, width=8):
    raise RuntimeError("no CUDA device\nfound")  # a message over two lines


def test_a_builder_of_yours_that_raises_is_refused_in_one_line_naming_its_source_and_line():
    mine = Variant("mine", _needs_a_gpu, "mine", "me", {}, source="file /lab/mine.py sha256:0123456789abcdef")
    line = _needs_a_gpu.__code__.co_firstlineno + 1
    with pytest.raises(VariantError) as refused:
        mine.build(SHAPES["mnist"])
    assert str(refused.value) == ("variant 'mine' (file /lab/mine.py sha256:0123456789abcdef): its builder raised "
                                  f"RuntimeError: no CUDA device found (at test_registry.py:{line})")
    # A built-in's builder that raises is bench's bug: its own exception and traceback, not a refusal.
    with pytest.raises(RuntimeError, match="no CUDA device"):
        Variant("ours", _needs_a_gpu, "ours", "bench", {}, source=BUILT_IN).build(SHAPES["mnist"])


def test_the_cli_and_the_registry_do_not_import_torchvision_until_a_resnet_is_built():
    """torchvision costs about a second at every bench process start (each worker, each CLI call)."""
    import subprocess
    import sys

    probe = ("import sys, bench.cli, bench.train\nfrom bench.models import list_variants\nlist_variants()\n"
             "assert 'torchvision' not in sys.modules, 'imported at start'\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_resnet_heads_arch_choices_are_the_backbones_it_can_build():
    from bench.models import _resnet, transfer

    assert set(transfer.ARCHS) == set(_resnet._WEIGHTS) == set(_resnet._ARCHITECTURES)
