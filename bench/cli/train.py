"""``bench list`` and ``bench train`` (with ``--resume``)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from ..config import AMP_MODES, MEMORY_FORMATS, OPTIMIZERS, ConfigError, TrainConfig
from ..models.plugins import canonical
from .common import UsageError, add_checkpoint_arguments, add_tracking_arguments, knob_pair, or_default


def add_parsers(sub) -> None:
    p = sub.add_parser("list", help="list variants (with parameter counts for --dataset) and data sets")
    p.add_argument("--dataset", help="show each variant's parameter count for this data set's input shape")
    p.add_argument("--variant", action="append", default=[], metavar="FILE.py:NAME",
                   help="also show a variant of your own, given as FILE.py:NAME or package.module:NAME (repeatable)")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("train", help="train one variant on one data set")
    _add_train_arguments(p)
    p.set_defaults(func=cmd_train)


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    g = p.add_argument_group("what to train")
    g.add_argument("--variant", default=d.variant,
                   help=f"a variant (see `bench list`), or your own as FILE.py:NAME or package.module:NAME (default {d.variant})")
    g.add_argument("--dataset", default=d.dataset, help=f"mnist, fashion-mnist, cifar10, cifar2 or imagefolder:PATH (default {d.dataset})")
    g.add_argument("--width", type=or_default(int), help="the variant's width knob (channels or units)")
    g.add_argument("--depth", type=or_default(int), help="the variant's depth knob (conv layers, hidden layers or ResBlocks)")
    g.add_argument("--dropout", type=or_default(float), help="the variant's dropout probability, 0 <= p < 1")
    g.add_argument("--knob", type=knob_pair, action="append", default=[], metavar="NAME=VALUE",
                   help="any other knob of the variant, e.g. --knob batchnorm=true (repeatable)")
    g = p.add_argument_group("how to train")
    g.add_argument("--epochs", type=int, default=d.epochs, help=f"default {d.epochs}")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help=f"default {d.batch_size}")
    g.add_argument("--eval-batch-size", type=int, default=d.eval_batch_size, help=f"default {d.eval_batch_size}")
    g.add_argument("--optimizer", choices=(*OPTIMIZERS, "default"), help="default: the variant's (see `bench list`)")
    g.add_argument("--lr", type=or_default(float), help="learning rate, > 0 (default: the variant's)")
    g.add_argument("--momentum", type=or_default(float), help="for --optimizer momentum (default: the variant's, else 0.9)")
    g.add_argument("--weight-decay", type=or_default(float), help="optimizer weight decay (default: the variant's, else 0)")
    g.add_argument("--l2", type=or_default(float), help="explicit L2 penalty l2*sum(w^2) in the loss (default: the variant's, else 0)")
    g.add_argument("--seed", type=int, default=d.seed, help="seed of init, batch order and dropout (default 0)")
    g.add_argument("--split-seed", type=int, default=d.split_seed, help="seed of the train/val hold-out (default 0)")
    g.add_argument("--val-fraction", type=float, default=d.val_fraction, help=f"share of train held out as val (default {d.val_fraction})")
    g.add_argument("--val-from-test", action="store_true", help="use the test split as val, as the book does")
    g.add_argument("--max-train-samples", type=or_default(int), help="train on a seeded random subset of this many images")
    g = p.add_argument_group("where")
    g.add_argument("--device", default=d.device, help="auto (CUDA if present, else CPU), cpu, cuda, cuda:N (default auto)")
    g.add_argument("--amp", choices=AMP_MODES, default=d.amp, help="mixed precision; auto = bf16 on CUDA, off on CPU")
    g.add_argument("--memory-format", choices=MEMORY_FORMATS, default=d.memory_format,
                   help="activation layout; auto = channels_last for nets with convolutions")
    g.add_argument("--threads", type=or_default(int), help="torch CPU threads (default: torch's choice)")
    g.add_argument("--data-dir", help="data root (default: $BENCH_DATA_DIR, then torchvision's download)")
    g.add_argument("--quiet", action="store_true", help="no progress bar and no per-epoch lines")
    add_tracking_arguments(p, default_experiment="bench", optional=True)
    add_checkpoint_arguments(p)
    p.add_argument("--resume", metavar="RUN_ID",
                   help="continue run RUN_ID, which did not finish, from its latest checkpoint, in the same MLflow "
                        "run; its logged config is used (--device, --threads and --data-dir may differ)")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The resolved config the arguments describe; ``ConfigError`` if any value is bad."""
    knobs: dict[str, Any] = dict(args.knob)
    for name in ("width", "depth", "dropout"):
        if getattr(args, name) is not None:
            knobs[name] = getattr(args, name)
    config = TrainConfig(
        variant=canonical(args.variant),  # your own file, made absolute: workers and resumes find it
        knobs=knobs,
        dataset=args.dataset,
        epochs=args.epochs,
        batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size,
        optimizer=None if args.optimizer == "default" else args.optimizer,
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        l2=args.l2,
        seed=args.seed,
        split_seed=args.split_seed,
        device=args.device,
        amp=args.amp,
        memory_format=args.memory_format,
        val_fraction=args.val_fraction,
        val_from_test=args.val_from_test,
        max_train_samples=args.max_train_samples,
        threads=args.threads,
        data_dir=args.data_dir,
    )
    return config.resolve()


class ConsolePrinter:
    """Trainer callback: one line per epoch and a closing summary on stdout."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet

    def on_train_start(self, info) -> None:
        if not self.quiet:
            c = info.config
            print(
                f"{c.variant} on {c.dataset}: {info.num_parameters:,} parameters, {info.train_size:,} train / "
                f"{info.val_size:,} val / {info.test_size:,} test images, {info.device}, {c.optimizer} lr={c.lr:g}"
            )
            print(f"data: {info.data_source}")
            print(f"hardware: {info.hardware['machine']}, {info.hardware['torch_threads']} torch threads; "
                  f"{info.flop_per_image / 1e6:,.1f} MFLOP per training image, GEMM peak {info.peak_gflops:,.0f} GFLOP/s")
            if info.start_epoch:
                print(f"resumed after epoch {info.start_epoch} of {c.epochs} (from its checkpoint)")

    def on_epoch_end(self, m) -> None:
        if not self.quiet:
            print(
                f"epoch {m.epoch:3d}  train loss {m.train_loss:.4f} acc {m.train_acc:.4f}  "
                f"val loss {m.val_loss:.4f} acc {m.val_acc:.4f}  {m.epoch_time_s:.2f} s  {m.images_per_s:,.0f} img/s",
                flush=True,
            )

    def on_train_end(self, result) -> None:
        seconds = sum(m.epoch_time_s for m in result.history)
        f = result.final
        print(
            f"done: {result.config.variant} on {result.config.dataset}, {len(result.history)} epochs in {seconds:.1f} s "
            f"({seconds / len(result.history):.2f} s/epoch); train acc {f.train_acc:.4f}, val acc {f.val_acc:.4f}, "
            + ("test not evaluated" if result.test_acc is None else f"test acc {result.test_acc:.4f}")
        )
        if result.diverged:
            print(f"warning: this run diverged ({result.diverged}); suites do not judge it")


def cmd_list(args: argparse.Namespace) -> int:
    from ..data import DATASETS, DataError, dataset_info

    shape = None
    if args.dataset:
        try:
            shape = dataset_info(args.dataset).shape
        except DataError as exc:
            raise UsageError(str(exc)) from None
    print("variants" + (f" (parameters for {args.dataset}: {shape.channels}x{shape.size}x{shape.size}, {shape.num_classes} classes)" if shape else ""))
    quiet_models = logging.getLogger("bench.models")  # no pretrained-weights notes in a listing
    level = quiet_models.level
    quiet_models.setLevel(logging.ERROR)
    try:
        _print_variants(args.variant, shape)
    finally:
        quiet_models.setLevel(level)
    print("data sets")
    for info in DATASETS.values():
        print(f"  {info.name:<17}  {info.description}")
    print(f"  {'imagefolder:PATH':<17}  your own train/<class>/* and test/<class>/* images")
    return 0


def _print_variants(extra: list[str], shape) -> None:
    from ..models import BUILT_IN, VariantError, count_parameters, get_variant, list_variants, registered
    from ..models.plugins import entry_point_names, find

    for name in [*list_variants(), *extra]:
        try:
            v = get_variant(name)
            params = f"  {count_parameters(v.build(shape)):>12,}" if shape else ""
        except VariantError as exc:  # a broken plugin: shown, and the others still listed
            print(f"  {name:<17}  cannot be loaded: {exc}")
            continue
        pad = f"  {'':<17}{' ' * len(params)}"
        print(f"  {name:<17}{params}  {v.description}")
        knobs = ", ".join(f"{k}={kn.default}" for k, kn in v.knobs.items()) or "none"
        defaults = ", ".join(f"{k}={val}" for k, val in v.train_defaults.items()) or "bench's defaults"
        print(f"{pad}  knobs: {knobs}; trains with: {defaults}")
        print(f"{pad}  from: {v.origin}" + ("" if v.source == BUILT_IN else f" [{v.source}]"))
    for name in entry_point_names():  # an installed plugin that takes a built-in's name is refused, and says so
        if (built_in := registered(name)) is not None and built_in.source == BUILT_IN:
            try:
                find(name)
            except VariantError as exc:
                print(f"  {'(plugin) ' + name:<17}  cannot be loaded: {exc}")


def cmd_train(args: argparse.Namespace) -> int:
    from ..train import train

    if args.resume:
        return _resume_train(args)
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    callbacks: list[Any] = [ConsolePrinter(quiet=args.quiet)]
    progress = None if not args.quiet else False
    if args.no_tracking:  # no run id to key checkpoints by, and nothing to resume into
        train(config, callbacks, progress=progress)
        return 0
    from .. import tracking
    from ..runner import run_tracked

    name = f"{config.variant} {config.dataset} seed={config.seed}"
    from ..models import describe_variant

    tags = {tracking.TAG_KIND: "run", tracking.TAG_LABEL: config.variant, tracking.TAG_NOTE: describe_variant(config.variant)}
    experiment_id = tracking.experiment_id_for(args.experiment, "bench")
    run_id, _ = run_tracked(
        config, callbacks=callbacks, experiment_id=experiment_id, run_name=name, tags=tags, progress=progress,
        log_model=not args.no_log_model, checkpoints=None if args.no_checkpoint else args.checkpoint_every,
    )
    print(f"mlflow: run {run_id} (experiment {experiment_id}) in {tracking.tracking_uri()}")
    return 0


def _resume_train(args: argparse.Namespace) -> int:
    """``bench train --resume RUN_ID``: the run's own logged config, continued in that run."""
    import dataclasses

    from .. import tracking
    from ..checkpoint import CheckpointError
    from ..runner import run_tracked

    if args.no_tracking:
        raise UsageError("--resume continues an MLflow run; it cannot be combined with --no-tracking")
    try:
        run = tracking.get_run(args.resume)
    except Exception as exc:
        raise UsageError(f"--resume {args.resume}: no such run in {tracking.tracking_uri()} ({exc})") from None
    if run.info.status == "FINISHED":
        raise UsageError(f"--resume {args.resume}: the run already FINISHED; nothing to resume")
    try:
        config = TrainConfig.from_params(dict(run.data.params))
        # Only where and how fast may change; "auto" (the flag's default) keeps the run's device.
        moved = {k: getattr(args, k) for k in ("threads", "data_dir") if getattr(args, k) is not None}
        if args.device != "auto":
            moved["device"] = args.device
        config = dataclasses.replace(config, **moved).resolve()
    except ConfigError as exc:
        raise UsageError(f"--resume {args.resume}: {exc}") from None
    print(f"resuming run {args.resume} ({run.info.status}) from its latest checkpoint")
    try:
        run_tracked(
            config, callbacks=[ConsolePrinter(quiet=args.quiet)], resume_run_id=args.resume,
            progress=None if not args.quiet else False, log_model=not args.no_log_model,
            checkpoints=None if args.no_checkpoint else args.checkpoint_every,
        )
    except CheckpointError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    print(f"mlflow: run {args.resume} resumed and FINISHED in {tracking.tracking_uri()}")
    return 0
