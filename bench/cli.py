"""The ``bench`` command line (also ``python -m bench``).

Every setting is checked before any data is loaded; a bad one exits with status 2 and
a message naming the value and what is accepted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .config import AMP_MODES, MEMORY_FORMATS, OPTIMIZERS, ConfigError, TrainConfig

EXIT_USAGE = 2
DEFAULT_UI_URL = "http://127.0.0.1:5000"


class UsageError(Exception):
    """Bad command-line input: reported as ``bench: error: ...`` with exit status 2."""


def _knob_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return key.strip(), value.strip()


def _or_default(kind: type) -> Callable[[str], Any]:
    """A number, or the word ``default`` for "the variant's own" (MLproject needs a value)."""

    def parse(text: str) -> Any:
        if text == "default":
            return None
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__} or 'default', got {text!r}") from None

    parse.__name__ = kind.__name__
    return parse


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    g = p.add_argument_group("what to train")
    g.add_argument("--variant", default=d.variant, help=f"registered variant (see `bench list`; default {d.variant})")
    g.add_argument("--dataset", default=d.dataset, help=f"mnist, fashion-mnist, cifar10, cifar2 or imagefolder:PATH (default {d.dataset})")
    g.add_argument("--width", type=_or_default(int), help="the variant's width knob (channels or units)")
    g.add_argument("--depth", type=_or_default(int), help="the variant's depth knob (conv layers, hidden layers or ResBlocks)")
    g.add_argument("--dropout", type=_or_default(float), help="the variant's dropout probability, 0 <= p < 1")
    g.add_argument("--knob", type=_knob_pair, action="append", default=[], metavar="NAME=VALUE",
                   help="any other knob of the variant, e.g. --knob batchnorm=true (repeatable)")
    g = p.add_argument_group("how to train")
    g.add_argument("--epochs", type=int, default=d.epochs, help=f"default {d.epochs}")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help=f"default {d.batch_size}")
    g.add_argument("--eval-batch-size", type=int, default=d.eval_batch_size, help=f"default {d.eval_batch_size}")
    g.add_argument("--optimizer", choices=(*OPTIMIZERS, "default"), help="default: the variant's (see `bench list`)")
    g.add_argument("--lr", type=_or_default(float), help="learning rate, > 0 (default: the variant's)")
    g.add_argument("--momentum", type=_or_default(float), help="for --optimizer momentum (default: the variant's, else 0.9)")
    g.add_argument("--weight-decay", type=_or_default(float), help="optimizer weight decay (default: the variant's, else 0)")
    g.add_argument("--l2", type=_or_default(float), help="explicit L2 penalty l2*sum(w^2) in the loss (default: the variant's, else 0)")
    g.add_argument("--seed", type=int, default=d.seed, help="seed of init, batch order and dropout (default 0)")
    g.add_argument("--split-seed", type=int, default=d.split_seed, help="seed of the train/val hold-out (default 0)")
    g.add_argument("--val-fraction", type=float, default=d.val_fraction, help=f"share of train held out as val (default {d.val_fraction})")
    g.add_argument("--val-from-test", action="store_true", help="use the test split as val, as the book does")
    g.add_argument("--max-train-samples", type=_or_default(int), help="train on a seeded random subset of this many images")
    g = p.add_argument_group("where")
    g.add_argument("--device", default=d.device, help="auto (CUDA if present, else CPU), cpu, cuda, cuda:N (default auto)")
    g.add_argument("--amp", choices=AMP_MODES, default=d.amp, help="mixed precision; auto = bf16 on CUDA, off on CPU")
    g.add_argument("--memory-format", choices=MEMORY_FORMATS, default=d.memory_format,
                   help="activation layout; auto = channels_last for nets with convolutions")
    g.add_argument("--threads", type=_or_default(int), help="torch CPU threads (default: torch's choice)")
    g.add_argument("--data-dir", help="data root (default: $BENCH_DATA_DIR, then torchvision's download)")
    g.add_argument("--quiet", action="store_true", help="no progress bar and no per-epoch lines")
    _add_tracking_arguments(p, default_experiment="bench", optional=True)
    _add_checkpoint_arguments(p)
    p.add_argument("--resume", metavar="RUN_ID",
                   help="continue run RUN_ID, which did not finish, from its latest checkpoint, in the same MLflow "
                        "run; its logged config is used (--device, --threads and --data-dir may differ)")


def _checkpoint_policy(text: str) -> Any:
    from .checkpoint import Policy

    try:
        return Policy.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_checkpoint_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("checkpoints (so a killed run can --resume; kept in $BENCH_CACHE_DIR/checkpoints)")
    g.add_argument("--checkpoint-every", type=_checkpoint_policy, default="auto", metavar="N|auto",
                   help="save model, optimizer and RNG states every N epochs; auto (default) saves once the "
                        "training time since the last save is 100x what that save cost, i.e. <= 1%% overhead")
    g.add_argument("--no-checkpoint", action="store_true", help="write no checkpoints")


def _add_tracking_arguments(p: argparse.ArgumentParser, default_experiment: str, optional: bool = False) -> None:
    g = p.add_argument_group("tracking (MLflow; the store is $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)")
    g.add_argument(
        "--experiment",
        help=f"MLflow experiment (default: $MLFLOW_EXPERIMENT_ID or $MLFLOW_EXPERIMENT_NAME if set, else {default_experiment})",
    )
    if optional:
        g.add_argument("--no-tracking", action="store_true", help="do not log to MLflow at all")
    g.add_argument("--no-log-model", action="store_true", help="log params and metrics but not the trained model")
    g.add_argument("--no-system-metrics", action="store_true",
                   help="no MLflow system metrics (CPU, memory, disk, GPU sampled every 2 s into each run)")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The resolved config the arguments describe; ``ConfigError`` if any value is bad."""
    knobs: dict[str, Any] = dict(args.knob)
    for name in ("width", "depth", "dropout"):
        if getattr(args, name) is not None:
            knobs[name] = getattr(args, name)
    config = TrainConfig(
        variant=args.variant,
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
            f"test acc {result.test_acc:.4f}"
        )


def cmd_list(args: argparse.Namespace) -> int:
    from .data import DATASETS, DataError, dataset_info
    from .models import count_parameters, get_model, get_variant, list_variants

    shape = None
    if args.dataset:
        try:
            shape = dataset_info(args.dataset).shape
        except DataError as exc:
            raise UsageError(str(exc)) from None
    print("variants" + (f" (parameters for {args.dataset}: {shape.channels}x{shape.size}x{shape.size}, {shape.num_classes} classes)" if shape else ""))
    logging.getLogger("bench.models").setLevel(logging.ERROR)  # no pretrained-weights notes here
    for name in list_variants():
        v = get_variant(name)
        params = f"  {count_parameters(get_model(name, shape)):>12,}" if shape else ""
        print(f"  {name:<17}{params}  {v.description}")
        knobs = ", ".join(f"{k}={kn.default}" for k, kn in v.knobs.items()) or "none"
        defaults = ", ".join(f"{k}={val}" for k, val in v.train_defaults.items())
        print(f"  {'':<17}{' ' * len(params)}  knobs: {knobs}; trains with: {defaults}")
        print(f"  {'':<17}{' ' * len(params)}  from: {v.origin}")
    print("data sets")
    for info in DATASETS.values():
        print(f"  {info.name:<17}  {info.description}")
    print(f"  {'imagefolder:PATH':<17}  your own train/<class>/* and test/<class>/* images")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .train import train

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
    from . import tracking
    from .runner import run_tracked

    name = f"{config.variant} {config.dataset} seed={config.seed}"
    from .suite import describe_variant

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

    from . import tracking
    from .checkpoint import CheckpointError
    from .runner import run_tracked

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


def _seed_list(text: str) -> list[int] | None:
    """``3`` means seeds 0, 1, 2; ``0,5,7`` means exactly those; ``default`` the suite's."""
    if text == "default":
        return None
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            seeds = list(range(int(text)))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count (3) or a list (0,5,7), got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds):
        raise argparse.ArgumentTypeError(f"expected at least one seed, all >= 0, got {text!r}")
    return seeds


def cmd_suite(args: argparse.Namespace) -> int:
    from .suite import SuiteError, SuiteFailed, format_summary, load_suite, run_suite, run_suite_workers

    overrides: dict[str, Any] = {}
    for name in ("epochs", "max_train_samples", "batch_size"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    overrides.update({"device": args.device, "threads": args.threads, "data_dir": args.data_dir})
    rows = [r.strip() for r in args.rows.split(",") if r.strip()] if args.rows else None
    try:
        suite = load_suite(args.file)
        plan = suite.plan(args.profile, args.seeds, overrides, rows=rows)  # every run checked before any starts
    except SuiteError as exc:
        raise UsageError(str(exc)) from None
    if args.workers < 1:
        raise UsageError(f"--workers {args.workers} is not accepted; accepted: an integer >= 1")
    storage = None if args.storage in (None, "", "default") else args.storage
    if args.study_name and storage is None and args.workers == 1:
        raise UsageError("--study-name names a study in --storage; give --storage too (or --workers K)")
    common = dict(
        seeds=args.seeds,
        resume=args.resume if args.resume is not None else False,
        experiment=args.experiment,
        overrides=overrides,
        log_models=not args.no_log_model,
        progress=False if (args.quiet or args.workers > 1 or args.worker_of) else None,
        rows=rows,
        checkpoints=None if args.no_checkpoint else args.checkpoint_every,
        epoch_lines=not args.quiet,
    )
    if not args.worker_of:
        print(f"suite {suite.name} [{args.profile}]: {len(plan)} runs on {suite.dataset}")
    try:
        if args.workers > 1 or storage is not None:
            outcome = run_suite_workers(suite, args.profile, workers=args.workers, storage=storage,
                                        study_name=args.study_name, worker_of=args.worker_of,
                                        worker_index=args.worker_index, **common)
            if args.worker_of:
                return 1 if outcome.failed else 0
        else:
            outcome = run_suite(suite, args.profile, **common)
    except SuiteError as exc:
        raise UsageError(str(exc)) from None
    except SuiteFailed as exc:
        print(format_summary(exc.summary))
        print(f"bench: {exc}", file=sys.stderr)
        if args.report is not None and not exc.summary.empty:
            _write_report(exc.parent_run_id, args.report or None, args.ui_url)
        return 1
    print(format_summary(outcome.summary))
    print(f"parent run {outcome.parent_run_id}: {outcome.ran} run(s) trained, {outcome.skipped} skipped as finished")
    if args.report is not None:
        _write_report(outcome.parent_run_id, args.report or None, args.ui_url)
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from .search import SearchError, load_study, run_search, run_worker

    try:
        spec = load_study(args.file)
    except SearchError as exc:
        raise UsageError(str(exc)) from None
    if args.n_trials is not None and args.n_trials < 1:
        raise UsageError(f"--n-trials {args.n_trials} is not accepted; accepted: an integer >= 1")
    if args.workers < 1:
        raise UsageError(f"--workers {args.workers} is not accepted; accepted: an integer >= 1")
    storage = None if args.storage in (None, "", "default") else args.storage
    if args.worker_of:  # one of --workers K processes, started by the coordinating one
        run_worker(spec, storage, args.n_trials or spec.n_trials, args.worker_of, threads=args.threads,
                   worker_index=args.worker_index)
        return 0
    try:
        outcome = run_search(
            spec, storage=storage, n_trials=args.n_trials, workers=args.workers, threads=args.threads,
            experiment=args.experiment, register_best=not args.no_register, progress=False if args.quiet else None,
        )
    except SearchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    states = ", ".join(f"{n} {k.lower()}" for k, n in sorted(outcome.states.items()))
    print(f"study {outcome.study_name}: {outcome.n_trials} trials ({states}), {outcome.epochs_trained} epochs trained")
    if outcome.best_trial is not None:
        print(f"best: trial {outcome.best_trial}, {spec.metric} {outcome.best_value:.4f}, params {outcome.best_params}")
    print(f"parent run {outcome.parent_run_id}")
    if args.report is not None:
        _write_report(outcome.parent_run_id, args.report or None, args.ui_url)
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from .search import SearchError, load_study, serve_dashboard

    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} is not accepted; accepted: 1 to 65535")
    try:
        spec = load_study(args.file)
        serve_dashboard(spec, None if args.storage in (None, "", "default") else args.storage, host=args.host,
                        port=args.port)
    except SearchError as exc:
        raise UsageError(str(exc)) from None
    return 0


def _write_report(target: str, out: str | None, ui_url: str, log: bool = True) -> None:
    from .report import build_report

    report = build_report(target, out, ui_url=ui_url, log=log)
    logged = f"; also logged to run {report.parent_run_id}" if log else ""
    print(f"report: {report.out_dir / 'index.html'} ({len(report.summary)} rows{logged})")


def cmd_report(args: argparse.Namespace) -> int:
    from .report import ReportError

    try:
        _write_report(args.target, args.out, args.ui_url, log=not args.no_log)
    except ReportError as exc:
        raise UsageError(str(exc)) from None
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench", description="Train and compare image-classifier variants (see README.md)."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("list", help="list variants (with parameter counts for --dataset) and data sets")
    p.add_argument("--dataset", help="show each variant's parameter count for this data set's input shape")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("train", help="train one variant on one data set")
    _add_train_arguments(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("suite", help="run a declared suite (studies/*.toml): every row x seed as MLflow child runs")
    p.add_argument("file", help="suite file, e.g. studies/cifar2_chapter8.toml")
    p.add_argument("--profile", default="quick", help="profile of the suite file (default quick)")
    p.add_argument("--seeds", type=_seed_list, help="3 = seeds 0,1,2; or a list 0,5,7 (default: the suite's)")
    p.add_argument("--resume", nargs="?", const=True, metavar="PARENT_RUN_ID",
                   help="re-open the latest parent run of this suite and profile (or the one given) "
                        "and skip the runs that already FINISHED")
    p.add_argument("--rows", metavar="LABEL,...", help="run only these rows of the suite (default: all)")
    p.add_argument("--epochs", type=int, help="override every row's epochs (for a smoke test)")
    p.add_argument("--batch-size", type=int, help="override every row's batch size")
    p.add_argument("--max-train-samples", type=_or_default(int), help="train every row on a subset of this many images")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default auto)")
    p.add_argument("--threads", type=_or_default(int), help="torch CPU threads (default: torch's choice)")
    p.add_argument("--data-dir", help="data root (default: $BENCH_DATA_DIR, then torchvision's download)")
    p.add_argument("--quiet", action="store_true", help="no progress bars and no per-epoch lines")
    p.add_argument("--report", nargs="?", const="", metavar="DIR",
                   help="write the report when the suite ends (default DIR: reports/<suite name>)")
    p.add_argument("--ui-url", default=DEFAULT_UI_URL, help=f"MLflow UI address for the report's links (default {DEFAULT_UI_URL})")
    g = p.add_argument_group("workers (the runs are handed out through an Optuna study; see docs/deploy.md)")
    g.add_argument("--workers", type=int, default=1,
                   help="worker processes on this machine, sharing its cores (--threads each: cores / workers) "
                        "or one GPU each when there are several (default 1: one run after another, no study)")
    g.add_argument("--storage", metavar="URL",
                   help="Optuna storage shared by the workers of several machines: postgresql://... (or a "
                        "journal file on one host); start the same command on each machine "
                        "(default with --workers K: a journal file under optuna/suites/)")
    g.add_argument("--study-name", help="the study in --storage (default: suite, profile, seeds and a digest of the "
                                        "plan, so identical commands on several machines meet in one study)")
    g.add_argument("--worker-of", help=argparse.SUPPRESS)
    g.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    _add_tracking_arguments(p, default_experiment="the suite's name")
    _add_checkpoint_arguments(p)
    p.set_defaults(func=cmd_suite)

    p = sub.add_parser("search", help="Optuna search declared in a study file (studies/*_search.toml)")
    p.add_argument("file", help="study file, e.g. studies/cifar2_search.toml")
    p.add_argument("--n-trials", type=_or_default(int), help="total trials the study should count (default: the file's); re-running resumes")
    p.add_argument("--storage", help="optuna storage: a journal file path (default optuna/<study>.journal) "
                                      "or postgresql://user:pass@host/db for many machines")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine, sharing the cores (default 1)")
    p.add_argument("--threads", type=_or_default(int), help="torch threads per worker (default: cores / workers)")
    p.add_argument("--no-register", action="store_true", help="skip retraining and registering the best model")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--report", nargs="?", const="", metavar="DIR", help="write the study's report at the end")
    p.add_argument("--ui-url", default=DEFAULT_UI_URL, help=f"MLflow UI address for the report's links (default {DEFAULT_UI_URL})")
    p.add_argument("--worker-of", help=argparse.SUPPRESS)
    p.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    _add_tracking_arguments(p, default_experiment="the study's name")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("dashboard", help="open optuna-dashboard on a study's storage (pip install -e '.[dashboard]')")
    p.add_argument("file", help="study file, e.g. studies/cifar2_search.toml")
    p.add_argument("--storage", help="the study's storage (default optuna/<study>.journal, as bench search uses)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("report", help="write the HTML + PNG report of a suite or study from MLflow")
    p.add_argument("target", help="suite or study name (its latest parent run) or a parent run id")
    p.add_argument("--out", help="output folder (default reports/<name>)")
    p.add_argument("--ui-url", default=DEFAULT_UI_URL, help=f"MLflow UI address for run links (default {DEFAULT_UI_URL})")
    p.add_argument("--no-log", action="store_true", help="do not also log the report as artifacts of the parent run")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    from .data import DataError
    from .train import NonFiniteLossError

    if getattr(args, "no_system_metrics", False):  # an environment variable, so worker processes inherit it
        os.environ["BENCH_SYSTEM_METRICS"] = "0"
    try:
        return args.func(args)
    except UsageError as exc:
        parser.exit(EXIT_USAGE, f"bench: error: {exc}\n")
    except (DataError, NonFiniteLossError) as exc:  # expected failures: a message, not a traceback
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
