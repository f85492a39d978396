"""The one trainer: any registered variant, any data set, CPU or CUDA, from one ``TrainConfig``.

It knows nothing about tracking or hyper-parameter search. Observers subscribe as
callbacks (``on_train_start``, ``on_step_end``, ``on_epoch_end``, ``on_train_end``); an exception raised
by a callback (an Optuna prune, say) stops training and propagates.

Speed notes, since these nets are tiny and overheads dominate:
- the whole split lives on the device, normalised once; batches are gathered by a
  seeded random permutation into one reused buffer (no DataLoader, no per-sample work);
- per-step loss and accuracy stay on the device; the host syncs once per epoch.

Long runs survive: given a ``Checkpointer`` the trainer saves model, optimizer, RNG
states and history at epoch ends (``on_checkpoint`` tells observers), and given a
loaded checkpoint it continues from the epoch after it, drawing the same batches and
dropout masks an uninterrupted run would have drawn.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, update_bn
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from .config import ConfigError, TrainConfig
from .data import DataSplits, Split, load_dataset
from .models import count_parameters, get_model, get_variant
from .runtime import (
    amp_dtype, device_name, dtype_name, gemm_gflops, hardware, resolve_device, seed_everything, tune_malloc, use_device,
)

__all__ = [
    "Callback",
    "CheckpointSaved",
    "EpochMetrics",
    "NonFiniteLossError",
    "RunInfo",
    "TrainResult",
    "evaluate_pixels",
    "load_data",
    "train",
]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the message names the epoch and step."""


@dataclasses.dataclass
class EpochMetrics:
    epoch: int  # 1-based
    train_loss: float
    train_acc: float  # fraction in [0, 1], measured while training (dropout on)
    val_loss: float
    val_acc: float
    epoch_time_s: float  # wall seconds of the training pass, synchronised
    images_per_s: float  # training images per second
    train_gflops: float  # achieved: training FLOPs per image (forward + backward) x images/s / 1e9
    gemm_fraction: float  # train_gflops / this machine's dense GEMM GFLOP/s: comparable across machines
    # val of the moving average of the weights, its batch-norm statistics averaged too (recomputed on
    # the train split only once, after training: ``TrainResult.after["val_acc_ema"]``); NaN when off.
    val_acc_ema: float = math.nan

    def as_dict(self) -> dict[str, float]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "epoch"}


@dataclasses.dataclass
class RunInfo:
    """What observers learn when training starts."""

    config: TrainConfig  # resolved: every default filled in
    num_parameters: int
    device: str
    data_source: str
    train_size: int
    val_size: int
    test_size: int
    model: nn.Module
    data: DataSplits  # the exact splits (their digests identify the data)
    hardware: dict[str, str]  # CPU model and ISA, cores, torch threads, memory, GPU (runtime.hardware)
    flop_per_image: float  # one training step's forward + backward FLOPs per image
    peak_gflops: float  # the machine's dense GEMM rate in the run's compute dtype
    start_epoch: int = 0  # epochs already done when resumed from a checkpoint; 0 for a fresh run
    compute_dtype: str = "float32"  # what autocast computes in: float32 (none), bfloat16 or float16
    model_notes: dict[str, str] = dataclasses.field(default_factory=dict)  # what the builder reports (e.g. weights)
    variant_source: str = "built-in"  # which code built the model: built-in, a file and its digest, a package


@dataclasses.dataclass
class CheckpointSaved:
    """What ``on_checkpoint`` observers get: the file (renamed into place, complete) and its epoch."""

    path: Path
    epoch: int


@dataclasses.dataclass
class TrainResult:
    config: TrainConfig
    history: list[EpochMetrics]
    test_loss: float | None  # None when the config says not to touch test (a search's trials)
    test_acc: float | None
    model: nn.Module
    num_parameters: int
    device: str
    data_source: str
    input_example: torch.Tensor  # a few test images as [0, 1] float pixels, for model signatures
    mean: tuple[float, ...]  # normalisation the model expects (train-split statistics)
    std: tuple[float, ...]
    classes: tuple[str, ...]
    # Measured once after training: train_acc_eval (the train split, eval mode), val_acc_last_k (mean val
    # over the last config.last_k epochs), val_acc_ema (the moving average of the weights, batch-norm
    # statistics recomputed on the train split) and, with config.train_mode_eval, train_acc_train_mode
    # and val_acc_train_mode (the model left in train mode).
    after: dict[str, float] = dataclasses.field(default_factory=dict)
    diverged: str | None = None  # why the run counts as diverged (its loss exploded), else None

    @property
    def final(self) -> EpochMetrics:
        return self.history[-1]


class Callback(Protocol):
    def on_train_start(self, info: RunInfo) -> None: ...
    def on_step_end(self, epoch: int, step: int, steps: int) -> None: ...  # host-side only: no device sync
    def on_epoch_end(self, metrics: EpochMetrics) -> None: ...
    def on_checkpoint(self, saved: CheckpointSaved) -> None: ...
    def on_train_end(self, result: TrainResult) -> None: ...


def _notify(callbacks: Sequence[Any], hook: str, arg: Any) -> None:
    for cb in callbacks:
        method = getattr(cb, hook, None)
        if method is not None:
            method(arg)


def _to_device(
    split: Split, device: torch.device, mean: torch.Tensor, std: torch.Tensor, layout: torch.memory_format
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 NCHW -> normalised float32 on ``device`` in ``layout``, converted once for the whole run."""
    images = split.images.to(device).float().contiguous(memory_format=layout).div_(255.0)
    images.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))
    return images, split.labels.to(device)


def _memory_format(choice: str, model: nn.Module) -> torch.memory_format:
    """channels_last (NHWC) lets oneDNN/cuDNN pick their fast conv kernels; it only helps convolutions."""
    if choice == "channels_last" or (choice == "auto" and any(isinstance(m, nn.Conv2d) for m in model.modules())):
        return torch.channels_last
    return torch.contiguous_format


def train(
    config: TrainConfig,
    callbacks: Iterable[Any] = (),
    *,
    data: DataSplits | None = None,
    progress: bool | None = None,
    checkpointer: ckpt.Checkpointer | None = None,
    resume_from: str | Path | None = None,
) -> TrainResult:
    """Train ``config.variant`` on ``config.dataset`` and evaluate on test at the end.

    ``data`` lets a caller that runs many configs on one data set load it once.
    ``progress``: a tqdm bar per epoch; default only when stderr is a terminal.
    ``checkpointer``: where and when to save epoch checkpoints (none if None).
    ``resume_from``: a checkpoint file of this same config to continue from; one of
    another config or data raises ``CheckpointError`` before any training.
    """
    callbacks = list(callbacks)
    run = _prepare(config.resolve(), data, resume_from, needs_identity=checkpointer is not None)
    _notify(callbacks, "on_train_start", run.info)
    show_progress = sys.stderr.isatty() if progress is None else progress
    step_hooks = [cb.on_step_end for cb in callbacks if hasattr(cb, "on_step_end")]
    for epoch in range(run.info.start_epoch + 1, run.cfg.epochs + 1):
        metrics = _train_epoch(run, epoch, step_hooks, show_progress)
        run.history.append(metrics)
        _notify(callbacks, "on_epoch_end", metrics)
        if checkpointer is not None and checkpointer.due(epoch, metrics.epoch_time_s, final=epoch == run.cfg.epochs):
            _save_checkpoint(run, epoch, checkpointer, callbacks)
    result = _finish(run)
    _notify(callbacks, "on_train_end", result)
    return result


@dataclasses.dataclass
class _Run:
    """One training run's state: the model, its optimizer and the data, resident on the device."""

    cfg: TrainConfig
    device: torch.device
    data: DataSplits
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    autocast: Callable[[], contextlib.AbstractContextManager]
    l2_params: list[nn.Parameter]  # what an explicit L2 penalty sums over
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    layout: torch.memory_format
    mean: torch.Tensor
    std: torch.Tensor
    generator: torch.Generator  # the batch order
    identity: dict[str, Any]  # what a checkpoint of this run must match
    history: list[EpochMetrics]
    info: RunInfo | None = None
    ema: AveragedModel | None = None  # the moving average of the weights (config.ema_decay > 0)


def _prepare(cfg: TrainConfig, data: DataSplits | None, resume_from: str | Path | None, needs_identity: bool) -> _Run:
    """Everything before the first epoch: device, data on it, model, optimizer, and a resumed state."""
    try:
        device = resolve_device(cfg.device)
    except RuntimeError as exc:
        raise ConfigError(str(exc)) from None
    resumed = ckpt.load(resume_from) if resume_from is not None else None  # unreadable: fail before loading data
    use_device(device)
    dtype = amp_dtype(cfg.amp, device)
    tune_malloc()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    if data is None:
        data = load_data(cfg)
    variant = get_variant(cfg.variant)
    identity = (ckpt.identity(cfg, data, device.type, dtype_name(dtype), variant.source)
                if (needs_identity or resumed) else {})
    if resumed is not None:
        ckpt.check_identity(resumed, identity, resume_from)
    seed_everything(cfg.seed)
    model = variant.build(data.info.shape, **cfg.knobs)
    num_parameters = count_parameters(model)
    layout = _memory_format(cfg.memory_format, model)
    model = model.to(device=device, memory_format=layout)
    mean = torch.tensor(data.mean, device=device)
    std = torch.tensor(data.std, device=device)
    x_train, y_train = _to_device(data.train, device, mean, std, layout)
    x_val, y_val = _to_device(data.val, device, mean, std, layout)
    trainable = [p for p in model.parameters() if p.requires_grad]

    def autocast() -> contextlib.AbstractContextManager:
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=dtype)

    run = _Run(
        cfg, device, data, model, _make_optimizer(cfg, trainable), torch.amp.GradScaler(device.type, enabled=dtype is torch.float16),
        autocast, trainable, x_train, y_train, x_val, y_val, layout, mean, std,
        torch.Generator(device=device).manual_seed(cfg.seed), identity, [],
        ema=moving_average(model, cfg.ema_decay) if cfg.ema_decay > 0 else None,
    )
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        if run.ema is not None:
            run.ema.load_state_dict(resumed["ema"])
        run.optimizer.load_state_dict(resumed["optimizer"])
        run.scaler.load_state_dict(resumed["scaler"])
        ckpt.restore_rng(resumed["rng"], run.generator, device)
        run.history = [EpochMetrics(**m) for m in resumed["history"]]
    flop_per_image = _training_flops_per_image(model, x_train[:2], y_train[:2], autocast, device)
    run.info = RunInfo(
        cfg, num_parameters, device_name(device), data.source, len(y_train), len(y_val), len(data.test), model, data,
        hardware(device), flop_per_image, gemm_gflops(device, dtype or torch.float32), len(run.history),
        dtype_name(dtype), {k: str(v) for k, v in getattr(model, "bench_notes", {}).items()}, variant.source,
    )
    return run


def _train_epoch(run: _Run, epoch: int, step_hooks: Sequence[Callable[[int, int, int], None]],
                 show_progress: bool) -> EpochMetrics:
    """One pass over the training split in a seeded order, then the val split; one host sync."""
    cfg, device, model = run.cfg, run.device, run.model
    n = len(run.y_train)
    steps = math.ceil(n / cfg.batch_size)
    # Sizes of each step's batch (the last may be short), to weight the epoch's mean loss.
    step_sizes = torch.full((steps,), float(cfg.batch_size), device=device)
    step_sizes[-1] = n - cfg.batch_size * (steps - 1)
    step_losses = torch.empty(steps, device=device)
    x_batch = torch.empty((cfg.batch_size, *run.x_train.shape[1:]), device=device).contiguous(memory_format=run.layout)
    y_batch = torch.empty(cfg.batch_size, dtype=torch.int64, device=device)
    model.train()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    order = torch.randperm(n, generator=run.generator, device=device)
    start = time.perf_counter()
    bar = tqdm(total=steps, desc=f"epoch {epoch}/{cfg.epochs}", unit="step", leave=False, disable=not show_progress)
    for step in range(steps):
        index = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        xb = torch.index_select(run.x_train, 0, index, out=x_batch[: len(index)])
        yb = torch.index_select(run.y_train, 0, index, out=y_batch[: len(index)])
        with run.autocast():
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
        objective = loss
        if cfg.l2 > 0:
            objective = loss + cfg.l2 * sum(p.pow(2).sum() for p in run.l2_params)
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(objective).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        if run.ema is not None:
            run.ema.update_parameters(model)
        step_losses[step] = loss.detach()
        correct += (logits.argmax(1) == yb).sum()
        bar.update()
        for hook in step_hooks:
            hook(epoch, step + 1, steps)
    bar.close()
    # The epoch's one host sync: everything accumulated on the device comes back here.
    first_bad = torch.where(torch.isfinite(step_losses), steps, torch.arange(steps, device=device)).min()
    summary = torch.stack([(step_losses * step_sizes).sum() / n, correct.double(), first_bad.double()])
    train_loss, n_correct, first_bad = summary.tolist()
    first_bad = int(first_bad)
    epoch_time = time.perf_counter() - start
    if first_bad < steps:
        raise NonFiniteLossError(
            f"loss became {step_losses[first_bad].item()} at epoch {epoch}, step {first_bad + 1} of {steps} "
            f"(lr={cfg.lr}, optimizer={cfg.optimizer}); lower the learning rate or check the data"
        )
    val_loss, val_acc = _evaluate(model, run.x_val, run.y_val, cfg.eval_batch_size, run.autocast)
    if not math.isfinite(val_loss):
        raise NonFiniteLossError(f"val loss became {val_loss} at epoch {epoch} (lr={cfg.lr}, optimizer={cfg.optimizer})")
    val_acc_ema = math.nan
    if run.ema is not None:
        _, val_acc_ema = _evaluate(run.ema.module, run.x_val, run.y_val, cfg.eval_batch_size, run.autocast)
    gflops = run.info.flop_per_image * n / epoch_time / 1e9
    return EpochMetrics(
        epoch, train_loss, n_correct / n, val_loss, val_acc, epoch_time, n / epoch_time, gflops, gflops / run.info.peak_gflops,
        val_acc_ema,
    )


def _save_checkpoint(run: _Run, epoch: int, checkpointer: ckpt.Checkpointer, callbacks: Sequence[Any]) -> None:
    """Model, optimizer, every RNG state and the history, so a killed run continues as if never stopped."""
    with ckpt.Stopwatch() as watch:
        state = {
            "format": ckpt.FORMAT,
            "identity": run.identity,
            "epoch": epoch,
            "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scaler": run.scaler.state_dict(),
            "rng": ckpt.rng_state(run.generator, run.device),
            "history": [dataclasses.asdict(m) for m in run.history],
        }
        if run.ema is not None:
            state["ema"] = run.ema.state_dict()
        path = checkpointer.save(state)
        _notify(callbacks, "on_checkpoint", CheckpointSaved(path, epoch))
    checkpointer.record_cost(watch.seconds)


def _finish(run: _Run) -> TrainResult:
    """After the last epoch: the measurements taken once, on the trained model as it is.

    The train split in eval mode (the train accuracy a source's figure is compared with; the
    per-epoch one is a running mean taken while the weights still moved), the model in train
    mode where the config asks for a source's protocol, then the test split, unless the config
    keeps test untouched.
    """
    cfg = run.cfg
    _, train_acc_eval = _evaluate(run.model, run.x_train, run.y_train, cfg.eval_batch_size, run.autocast)
    after = {"train_acc_eval": train_acc_eval,
             "val_acc_last_k": sum(m.val_acc for m in run.history[-cfg.last_k:]) / len(run.history[-cfg.last_k:])}
    if run.ema is not None:
        after["val_acc_ema"] = ema_accuracy(run)
    if cfg.train_mode_eval:
        after["train_acc_train_mode"] = accuracy_in_train_mode(run.model, run.x_train, run.y_train, cfg.batch_size,
                                                               cfg.seed, run.autocast)
        after["val_acc_train_mode"] = accuracy_in_train_mode(run.model, run.x_val, run.y_val, cfg.batch_size, cfg.seed,
                                                             run.autocast)
    del run.x_train, run.y_train  # free the training copy before the test split arrives
    test_loss = test_acc = None
    if cfg.evaluate_test:
        x_test, y_test = _to_device(run.data.test, run.device, run.mean, run.std, run.layout)
        test_loss, test_acc = _evaluate(run.model, x_test, y_test, cfg.eval_batch_size, run.autocast)
    data = run.data
    return TrainResult(
        cfg, run.history, test_loss, test_acc, run.model, run.info.num_parameters, run.info.device, data.source,
        data.test.images[:4].float() / 255.0, data.mean, data.std, data.info.classes, after,
        _diverged(run.history, data.info.shape.num_classes),
    )


def moving_average(model: nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of ``model``'s weights and buffers (batch-norm statistics), updated
    after every step with decay min(decay, (1 + t) / (10 + t)) at step t: a warm-up, so the average of a
    short run is not mostly its random initial weights."""

    counter: list[int] = []  # the step, counted here: reading AveragedModel's from a GPU would sync every step

    @torch.no_grad()
    def ema(averaged: list[torch.Tensor], current: list[torch.Tensor], steps: torch.Tensor) -> None:
        if not averaged[0].is_floating_point():  # batch norm's step counters: the latest, not an average
            torch._foreach_copy_(averaged, current)
            return
        if not counter:  # once per process (a resumed run continues its count): one sync, not one per step
            counter.append(int(steps))
        else:
            counter[0] += 1
        t = float(counter[0])
        torch._foreach_lerp_(averaged, current, 1.0 - min(decay, (1.0 + t) / (10.0 + t)))

    return AveragedModel(model, multi_avg_fn=ema, use_buffers=True)


@torch.no_grad()
def ema_accuracy(run: _Run) -> float:
    """val accuracy of the moving average, its batch-norm statistics first recomputed over the train
    split (``torch.optim.swa_utils.update_bn``: the averaged running statistics belong to no single set
    of weights). On a copy: the run's own moving average, as checkpointed, stays as it was."""
    ema = copy.deepcopy(run.ema.module)
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in ema.modules()):
        batches = (run.x_train[i : i + run.cfg.batch_size] for i in range(0, len(run.y_train), run.cfg.batch_size))
        # update_bn runs the model in train mode (dropout draws): under a forked RNG, like every measurement here.
        with torch.random.fork_rng(devices=[run.device] if run.device.type == "cuda" else []), run.autocast():
            update_bn(batches, ema, device=run.device)
    return _evaluate(ema, run.x_val, run.y_val, run.cfg.eval_batch_size, run.autocast)[1]


@torch.no_grad()
def accuracy_in_train_mode(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int,
                           autocast=contextlib.nullcontext) -> float:
    """Accuracy with the model left in train mode, as code that never calls ``model.eval()`` measures it:
    dropout active, batch norm on each batch's own statistics, batches of ``batch_size``.

    The batches take the split in a fixed shuffled order (``seed``), not its stored order: a folder
    data set is stored class by class, and batches of one class would leave batch norm nothing to
    tell apart (the CIFAR files the sources read are in no class order). On a copy and under a
    forked RNG, so the model's running statistics and the run's random streams stay as they were.
    """
    probe = copy.deepcopy(model).train()
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed)).to(x.device)
        for i in range(0, len(y), batch_size):
            batch = order[i : i + batch_size]
            with autocast():
                logits = probe(x[batch])
            correct += (logits.argmax(1) == y[batch]).sum()
    return correct.item() / len(y)


def _diverged(history: Sequence[EpochMetrics], num_classes: int) -> str | None:
    """Why a run whose losses stayed finite still counts as diverged, or None.

    Chance level is ln(classes) (a uniform guess). A loss that ends above it after having been
    below half of where it ends has blown up; one that ends at ten times chance never trained.
    """
    chance = math.log(num_classes)
    final = history[-1].train_loss
    lowest = min(m.train_loss for m in history)
    if final > 10 * chance or (final > chance and final > 2 * lowest):
        return (f"train loss ended at {final:.4g} (lowest {lowest:.4g}; chance level ln({num_classes}) = "
                f"{chance:.3f}): the loss exploded")
    return None


def _training_flops_per_image(model: nn.Module, x: torch.Tensor, y: torch.Tensor, autocast, device) -> float:
    """Forward + backward FLOPs of one training step, per image, counted once on a copy.

    The copy and a forked RNG leave the real model, its BatchNorm statistics and the
    dropout masks of the run untouched, so counting does not change any result.
    """
    from torch.utils.flop_counter import FlopCounterMode

    probe = copy.deepcopy(model).train()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        with FlopCounterMode(display=False) as counter, autocast():
            F.cross_entropy(probe(x), y).backward()
    return counter.get_total_flops() / len(y)


def estimated_training_flops(config: TrainConfig) -> float:
    """Forward + backward FLOPs per image times epochs: how long a run will take, relative to
    others on the same data (suites hand the costliest runs out first). Builds the model on CPU."""
    from .data import dataset_info

    shape = dataset_info(config.dataset).shape
    model = get_model(config.variant, shape, **config.knobs)
    x = torch.zeros((2, shape.channels, shape.size, shape.size))
    y = torch.zeros(2, dtype=torch.int64)
    return _training_flops_per_image(model, x, y, contextlib.nullcontext, torch.device("cpu")) * config.epochs


def load_data(config: TrainConfig) -> DataSplits:
    """The splits ``config`` trains on (its data set, hold-out and subset settings)."""
    return load_dataset(
        config.dataset,
        config.data_dir,
        seed=config.split_seed,
        val_fraction=config.val_fraction,
        val_from_test=config.val_from_test,
        max_train_samples=config.max_train_samples,
        val_fold=config.val_fold,
    )


@torch.inference_mode()
def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, autocast,
              switch_to_eval: bool = True) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) over ``x``; one host sync at the end."""
    if switch_to_eval:
        model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    for i in range(0, len(y), batch_size):
        with autocast():
            logits = model(x[i : i + batch_size])
        loss_sum += F.cross_entropy(logits.float(), y[i : i + batch_size], reduction="sum")
        correct += (logits.argmax(1) == y[i : i + batch_size]).sum()
    loss, n_correct = torch.stack([loss_sum, correct.double()]).tolist()
    return loss / len(y), n_correct / len(y)


def evaluate_pixels(model: nn.Module, split: Split, batch_size: int = 1024) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of a model that takes [0, 1] float pixels (a logged model, whose
    graph normalises), on a split of uint8 images; on the CPU, in fp32."""
    x = split.images.float().div_(255.0)
    # An exported graph was traced in eval mode and has no eval() of its own (torch refuses the call).
    return _evaluate(model, x, split.labels, batch_size, contextlib.nullcontext, switch_to_eval=False)


def _make_optimizer(cfg: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    momentum = cfg.momentum if cfg.optimizer == "momentum" else 0.0
    return torch.optim.SGD(params, lr=cfg.lr, momentum=momentum, weight_decay=cfg.weight_decay)
