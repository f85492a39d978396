import math

import pytest
import torch
from torch import nn

from bench.config import ConfigError, TrainConfig
from bench.train import NonFiniteLossError, train


def tiny(**overrides) -> TrainConfig:
    settings = dict(variant="net", dataset="cifar2", epochs=2, max_train_samples=512, batch_size=64, progress=None)
    settings.pop("progress")
    settings.update(overrides)
    return TrainConfig(**settings)


def test_lenet_learns_mnist_in_one_short_epoch():
    result = train(TrainConfig(variant="lenet", dataset="mnist", epochs=1, max_train_samples=12_000, lr=0.05), progress=False)
    assert result.final.val_acc > 0.90
    assert result.test_acc > 0.90
    assert result.num_parameters == 8_490


def test_same_seed_gives_identical_metrics_and_weights():
    a = train(tiny(variant="net-dropout", seed=7), progress=False)
    b = train(tiny(variant="net-dropout", seed=7), progress=False)
    c = train(tiny(variant="net-dropout", seed=8), progress=False)
    strip = lambda r: [(m.train_loss, m.train_acc, m.val_loss, m.val_acc) for m in r.history]  # noqa: E731
    assert strip(a) == strip(b) and a.test_acc == b.test_acc
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(p, q)
    assert strip(a) != strip(c)


def test_history_has_one_entry_per_epoch_with_sane_values():
    result = train(tiny(epochs=3), progress=False)
    assert [m.epoch for m in result.history] == [1, 2, 3]
    for m in result.history:
        assert 0 <= m.train_acc <= 1 and 0 <= m.val_acc <= 1
        assert m.train_loss > 0 and m.val_loss > 0 and m.epoch_time_s > 0
        assert m.images_per_s == pytest.approx(512 / m.epoch_time_s)
    assert result.history[-1].train_loss < result.history[0].train_loss
    assert 0 <= result.test_acc <= 1 and result.test_loss > 0


def test_callbacks_see_start_every_epoch_and_end_in_order():
    events = []

    class Recorder:
        def on_train_start(self, info):
            events.append(("start", info.num_parameters, info.train_size))

        def on_epoch_end(self, metrics):
            events.append(("epoch", metrics.epoch))

        def on_train_end(self, result):
            events.append(("end", len(result.history)))

    train(tiny(epochs=2), [Recorder()], progress=False)
    assert events == [("start", 18_090, 512), ("epoch", 1), ("epoch", 2), ("end", 2)]


def test_step_hooks_see_every_step_of_every_epoch_in_order():
    seen = []

    class Steps:
        def on_step_end(self, epoch, step, steps):
            seen.append((epoch, step, steps))

    train(tiny(epochs=2), [Steps()], progress=False)
    steps = math.ceil(512 / 64)
    assert seen == [(epoch, step, steps) for epoch in (1, 2) for step in range(1, steps + 1)]


def test_epoch_lines_speak_inside_an_epoch_longer_than_their_interval():
    from bench.progress import EpochLine

    lines: list[str] = []
    train(tiny(epochs=2), [EpochLine("net seed=0", lines.append, every_s=0.0)], progress=False)
    steps = math.ceil(512 / 64)
    inside = [line for line in lines if ": step " in line]
    ends = [line for line in lines if "val acc" in line]
    assert len(ends) == 2 and ends[0].startswith("    net seed=0 epoch 1/2: train acc ")
    assert len(inside) == 2 * (steps - 1)  # every step but an epoch's last, which its own line reports
    assert inside[0] == f"    net seed=0 epoch 1/2: step 1/{steps}"
    quiet: list[str] = []
    train(tiny(epochs=1), [EpochLine("net seed=0", quiet.append)], progress=False)  # default: every 30 s
    assert [line for line in quiet if ": step " in line] == [] and len(quiet) == 1


def test_an_exception_in_a_callback_stops_training():
    class Stop(Exception):
        pass

    class StopAfterFirst:
        def on_epoch_end(self, metrics):
            raise Stop(metrics.epoch)

    with pytest.raises(Stop):
        train(tiny(epochs=5), [StopAfterFirst()], progress=False)


def test_variant_training_defaults_are_filled_in_and_explicit_values_win():
    cfg = TrainConfig(variant="net-l2").resolve()
    assert (cfg.optimizer, cfg.lr, cfg.l2, cfg.weight_decay) == ("sgd", 1e-2, 1e-3, 0.0)
    assert TrainConfig(variant="net-res-deep").resolve().lr == 3e-3
    assert TrainConfig(variant="lenet").resolve().momentum == 0.5
    assert TrainConfig(variant="net-l2", l2=0.5, lr=0.1).resolve().l2 == 0.5
    assert TrainConfig(variant="net", knobs={"width": 8}).resolve().knobs == {
        "width": 8, "depth": 2, "dropout": 0.0, "batchnorm": False,
    }


def test_l2_penalty_is_the_penalty_and_not_the_reported_loss():
    plain = train(tiny(variant="net", epochs=1, lr=0.05), progress=False)
    penalised = train(tiny(variant="net", epochs=1, lr=0.05, l2=0.05), progress=False)
    assert plain.final.train_loss != penalised.final.train_loss
    norm = lambda m: sum(p.pow(2).sum().item() for p in m.parameters())  # noqa: E731
    assert norm(penalised.model) < norm(plain.model)
    # The penalty l2 * sum(w^2) has the gradient 2 * l2 * w: with plain SGD that is exactly weight decay
    # of 2 * l2, step for step, so both runs end with the same weights (as the book says of net-l2).
    decayed = train(tiny(variant="net", epochs=1, lr=0.05, weight_decay=0.1), progress=False)
    for p, q in zip(penalised.model.parameters(), decayed.model.parameters()):
        assert torch.allclose(p, q, atol=1e-5)
    # The reported train loss is the cross-entropy alone (the penalty is not in it).
    assert penalised.final.train_loss == pytest.approx(decayed.final.train_loss, abs=1e-5)


def test_every_optimizer_trains_and_each_is_the_one_asked_for():
    from bench.train import _make_optimizer

    runs = {name: train(tiny(variant="softmax", epochs=2, optimizer=name, lr=1e-2), progress=False)
            for name in ("sgd", "momentum", "adam")}
    for name, result in runs.items():
        assert result.history[-1].train_loss < result.history[0].train_loss, name  # it learns
    weights = {name: next(r.model.parameters()) for name, r in runs.items()}
    assert not torch.allclose(weights["sgd"], weights["momentum"])  # momentum really is on
    assert not torch.allclose(weights["sgd"], weights["adam"])
    made = {name: _make_optimizer(tiny(variant="softmax", optimizer=name, lr=1e-2).resolve(),
                                  [torch.nn.Parameter(torch.zeros(1))]) for name in ("sgd", "momentum", "adam")}
    assert type(made["adam"]).__name__ == "Adam" and made["sgd"].defaults["momentum"] == 0
    assert made["momentum"].defaults["momentum"] == 0.9


def test_non_finite_loss_names_epoch_and_step():
    with pytest.raises(NonFiniteLossError, match=r"at epoch 1, step \d+ of 8"):
        train(tiny(variant="mlp", lr=1e12, optimizer="sgd"), progress=False)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"lr": 0.0}, "lr=0.0 is not accepted"),
        ({"optimizer": "rmsprop"}, "accepted: sgd, momentum, adam"),
        ({"device": "tpu"}, "accepted: auto, cpu, cuda"),
        ({"epochs": 0}, "epochs=0"),
        ({"variant": "nope"}, "unknown variant"),
        ({"dataset": "imagenet"}, "unknown data set 'imagenet'"),
    ],
)
def test_bad_config_raises_before_loading_data(overrides, message, monkeypatch):
    import bench.train as train_module

    monkeypatch.setattr(train_module, "load_dataset", lambda *a, **k: pytest.fail("data was loaded"))
    with pytest.raises(ConfigError, match=message):
        train(tiny(**overrides), progress=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_asking_for_cuda_without_it_is_a_config_error():
    with pytest.raises(ConfigError, match="CUDA is not available"):
        train(tiny(device="cuda"), progress=False)


def test_flat_config_holds_every_field_and_knob():
    flat = TrainConfig(variant="net").resolve().to_flat_dict()
    assert flat["variant"] == "net" and flat["knob.width"] == 16 and flat["seed"] == 0
    assert "knobs" not in flat


def test_after_training_the_train_split_is_measured_and_the_book_protocol_leaves_the_model_alone():
    config = tiny(variant="net-batchnorm", epochs=1, train_mode_eval=True)
    plain = train(tiny(variant="net-batchnorm", epochs=1), progress=False)
    measured = train(config, progress=False)
    steadier = {"val_acc_last_k", "val_acc_ema"}  # every run's
    assert set(measured.after) == {"train_acc_eval", "train_acc_train_mode", "val_acc_train_mode", *steadier}
    assert set(plain.after) == {"train_acc_eval", *steadier}
    # Measuring in train mode runs on a copy under a forked RNG: the trained model and test are unchanged.
    assert measured.test_acc == plain.test_acc and measured.after["train_acc_eval"] == plain.after["train_acc_eval"]
    for p, q in zip(measured.model.state_dict().values(), plain.model.state_dict().values()):
        assert torch.equal(p, q)
    # Batch statistics instead of running ones: a different number for a batch-norm net...
    assert measured.after["val_acc_train_mode"] != measured.final.val_acc
    # ...and the same one for a net with neither dropout nor batch norm.
    net = train(tiny(epochs=1, train_mode_eval=True), progress=False)
    assert net.after["val_acc_train_mode"] == net.final.val_acc


def test_train_mode_accuracy_does_not_depend_on_a_class_sorted_split():
    from bench.train import accuracy_in_train_mode

    # The class is a shift of the one feature; batch norm on batches of one class would subtract it away.
    # A folder data set is stored class by class, so batches in stored order would score about 50 %.
    torch.manual_seed(0)
    y = torch.arange(2).repeat_interleave(512)
    x = (y.float() * 2 - 1).unsqueeze(1) * 3 + torch.randn(1024, 1)
    model = nn.Sequential(nn.BatchNorm1d(1, affine=False), nn.Linear(1, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[-1.0], [1.0]]))
        model[1].bias.zero_()
    assert accuracy_in_train_mode(model, x, y, batch_size=64, seed=0) > 0.95
    assert model.training and model[0].num_batches_tracked.item() == 0  # the model itself is left alone


def test_a_search_config_never_touches_test():
    result = train(tiny(epochs=1, evaluate_test=False), progress=False)
    assert result.test_acc is None and result.test_loss is None


def test_a_loss_that_exploded_is_called_diverged():
    from bench.train import EpochMetrics, _diverged

    def history(*losses):
        return [EpochMetrics(i + 1, loss, 0.5, loss, 0.5, 1.0, 1.0, 1.0, 0.1) for i, loss in enumerate(losses)]

    assert _diverged(history(0.7, 0.5, 0.3), 2) is None  # learning
    assert _diverged(history(0.69, 0.69, 0.69), 2) is None  # stuck at chance: bad, not diverged
    assert "exploded" in _diverged(history(0.6, 0.3, 1.2), 2)  # learned, then blew up
    assert "exploded" in _diverged(history(40.0, 35.0), 10)  # never anywhere near chance


def test_two_architectures_with_one_seed_see_the_same_batches_and_the_same_split(monkeypatch):
    """What makes paired seeds work: a row's seed fixes its batch order whatever its variant (the order
    comes from a generator of its own, seeded before any model draws), and the split is the split seed's."""
    from bench.train import load_data

    seen: dict[str, list[torch.Tensor]] = {}
    real = torch.index_select

    def recording(source, dim, index, *, out=None):
        if source.dtype == torch.int64:  # the labels of each training batch: one call per step
            seen.setdefault(current, []).append(index.clone())
        return real(source, dim, index, out=out)

    monkeypatch.setattr(torch, "index_select", recording)
    for current in ("net", "net-depth"):
        train(tiny(variant=current, epochs=2, seed=7), progress=False)
    assert len(seen["net"]) == len(seen["net-depth"]) > 2
    assert all(torch.equal(a, b) for a, b in zip(seen["net"], seen["net-depth"]))
    net, deeper = load_data(tiny(variant="net", seed=7)), load_data(tiny(variant="net-depth", seed=3))
    assert net.train.digest() == deeper.train.digest() and net.val.digest() == deeper.val.digest()


def test_the_steadier_measures_are_what_they_say_and_cost_the_run_nothing():
    plain = train(tiny(epochs=3, ema_decay=0.0, last_k=2), progress=False)
    measured = train(tiny(epochs=3, ema_decay=0.99, last_k=2), progress=False)
    # The moving average only observes: the run's own numbers and weights are the same with it or without.
    assert [m.val_acc for m in measured.history] == [m.val_acc for m in plain.history]
    assert measured.after["val_acc_last_k"] == pytest.approx((measured.history[-1].val_acc
                                                              + measured.history[-2].val_acc) / 2)
    assert 0.5 < measured.after["val_acc_ema"] <= 1 and all(0 < m.val_acc_ema <= 1 for m in measured.history)
    assert "val_acc_ema" not in plain.after and math.isnan(plain.history[0].val_acc_ema)
