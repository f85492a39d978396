"""``bench suite``: run a declared suite, serially or on workers and machines."""

from __future__ import annotations

import argparse
import sys
import textwrap
from typing import Any

from ..verdicts.sequential import DEFAULT_SPENDING, SPENDING, AutoSeeds
from .common import (
    DEFAULT_UI_URL, UsageError, add_checkpoint_arguments, add_tracking_arguments, duration, fraction, or_default,
    seed_list, storage_url, ui_url, write_report,
)


def add_parsers(sub) -> None:
    p = sub.add_parser("suite", help="run a declared suite (studies/*.toml): every row x seed as MLflow child runs")
    p.add_argument("file", help="suite file, e.g. studies/cifar2_chapter8.toml")
    p.add_argument("--profile", default="quick", help="profile of the suite file (default quick)")
    p.add_argument("--seeds", type=seed_list,
                   help="3 = seeds 0,1,2; or a list 0,5,7; or auto: rounds of seeds where they matter, only for "
                        "rows still undecided (default: the suite's)")
    g = p.add_argument_group("verdicts")
    g.add_argument("--margin", type=fraction,
                   help="the smallest difference of val accuracy that matters, e.g. 0.01 = 1 point: rows within it "
                        "are called equivalent (default: the suite file's margin, else 0.01)")
    g.add_argument("--max-seeds", type=or_default(int), default=AutoSeeds.max_seeds,
                   help=f"--seeds auto: at most this many seeds per row (default {AutoSeeds.max_seeds}; rounds start "
                        f"with {AutoSeeds.start} and add {AutoSeeds.step})")
    g.add_argument("--first-seed", type=int, default=0, metavar="N",
                   help="--seeds auto: every row's seeds are N, N+1, ... (default 0); a fresh N judges a design chosen "
                        "on seeds 0.. on seeds it never saw")
    g.add_argument("--spending", choices=SPENDING, default=DEFAULT_SPENDING,
                   help="--seeds auto: how the 5%% error rate is spent over its looks, fixed before the first: obf "
                        "(O'Brien-Fleming type, the default: almost nothing at early looks, nearly all at the last), "
                        "pocock (about evenly), bonferroni (alpha / looks each, the most wasteful)")
    g.add_argument("--budget", type=duration, metavar="DURATION",
                   help="--seeds auto: stop adding rounds when the next one would end after this much wall time "
                        "since the start, e.g. 30m, 2h, 1h30m, or none (default: no limit)")
    p.add_argument("--resume", nargs="?", const=True, metavar="PARENT_RUN_ID",
                   help="re-open the latest parent run of this suite and profile (or the one given) "
                        "and skip the runs that already FINISHED")
    p.add_argument("--rows", metavar="LABEL,...", help="run only these rows of the suite (default: all)")
    p.add_argument("--epochs", type=int, help="override every row's epochs (for a smoke test)")
    p.add_argument("--batch-size", type=int, help="override every row's batch size")
    p.add_argument("--max-train-samples", type=or_default(int), help="train every row on a subset of this many images")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default auto)")
    p.add_argument("--threads", type=or_default(int), help="torch CPU threads (default: torch's choice)")
    p.add_argument("--data-dir", help="data root (default: $BENCH_DATA_DIR, then torchvision's download)")
    p.add_argument("--quiet", action="store_true", help="no progress bars and no per-epoch lines")
    p.add_argument("--report", nargs="?", const="", metavar="DIR",
                   help="write the report when the suite ends (default DIR: reports/<suite name>)")
    p.add_argument("--ui-url", type=ui_url, default=DEFAULT_UI_URL, help=f"MLflow UI address for the report's links (default {DEFAULT_UI_URL})")
    g = p.add_argument_group("workers (the runs are handed out through an Optuna study; see docs/deploy.md)")
    g.add_argument("--workers", type=int, default=1,
                   help="worker processes on this machine, sharing its cores (--threads each: cores / workers) "
                        "or one GPU each when there are several (default 1: one run after another, no study)")
    g.add_argument("--storage", metavar="URL",
                   help="Optuna storage shared by the workers of several machines: postgresql://... (or a "
                        "journal file on one host); start the same command on each machine; $BENCH_STORAGE_URL "
                        "keeps a password off the command line (default with --workers K: a journal file under "
                        "optuna/suites/)")
    g.add_argument("--study-name", help="the study in --storage (default: suite, profile, seeds and a digest of the "
                                        "plan, so identical commands on several machines meet in one study)")
    g.add_argument("--worker-of", help=argparse.SUPPRESS)
    g.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    add_tracking_arguments(p, default_experiment="the suite's name")
    add_checkpoint_arguments(p)
    p.set_defaults(func=cmd_suite)


def cmd_suite(args: argparse.Namespace) -> int:
    from ..report import log_verdicts_figure
    from ..suites import SuiteError, SuiteFailed, format_summary, load_suite, run_suite

    overrides: dict[str, Any] = {}
    for name in ("epochs", "max_train_samples", "batch_size"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    overrides.update({"device": args.device, "threads": args.threads, "data_dir": args.data_dir})
    rows = [r.strip() for r in args.rows.split(",") if r.strip()] if args.rows else None
    auto = _auto_seeds(args)
    seeds = None if auto else args.seeds
    try:
        suite = load_suite(args.file).at_profile(args.profile)
        # Every run checked before any starts (with auto: every seed a round may add).
        plan = suite.plan(args.profile, auto.seed_list(auto.max_seeds) if auto else seeds, overrides, rows=rows)
    except SuiteError as exc:
        raise UsageError(str(exc)) from None
    if auto and suite.baseline is None:
        raise UsageError(f"--seeds auto judges rows against the suite's baseline; {args.file} declares none ([suite] baseline)")
    if args.workers < 1:
        raise UsageError(f"--workers {args.workers} is not accepted; accepted: an integer >= 1")
    storage = storage_url(args.storage)
    if args.study_name and storage is None and args.workers == 1:
        raise UsageError("--study-name names a study in --storage; give --storage too (or --workers K)")
    if not args.worker_of:
        what = (f"--seeds auto: {auto.start} seeds per row first, up to {auto.max_seeds}" if auto else f"{len(plan)} runs")
        print(f"suite {suite.name} [{args.profile}]: {what} on {suite.dataset}")
    try:
        outcome = run_suite(
            suite, args.profile, seeds=seeds, auto=auto, margin=args.margin,
            resume=args.resume if args.resume is not None else False, experiment=args.experiment,
            overrides=overrides, log_models=not args.no_log_model,
            progress=False if (args.quiet or args.workers > 1 or args.worker_of) else None, rows=rows,
            checkpoints=None if args.no_checkpoint else args.checkpoint_every, epoch_lines=not args.quiet,
            workers=args.workers, storage=storage, study_name=args.study_name, worker_of=args.worker_of,
            worker_index=args.worker_index,
        )
        if args.worker_of:
            return 1 if outcome.failed else 0
    except SuiteError as exc:
        raise UsageError(str(exc)) from None
    except SuiteFailed as exc:
        log_verdicts_figure(exc.parent_run_id, exc.summary)
        print(format_summary(exc.summary))
        print("\n".join(textwrap.wrap(f"bench: {exc}", 100, subsequent_indent="  ")), file=sys.stderr)
        if args.report is not None and not exc.summary.empty:
            write_report(exc.parent_run_id, args.report or None, args.ui_url)
        return 1
    log_verdicts_figure(outcome.parent_run_id, outcome.summary)
    print(format_summary(outcome.summary))
    print(f"parent run {outcome.parent_run_id}:\n  {outcome.line()}")
    if args.report is not None:
        write_report(outcome.parent_run_id, args.report or None, args.ui_url)
    return 0


def _auto_seeds(args: argparse.Namespace) -> AutoSeeds | None:
    max_seeds = AutoSeeds.max_seeds if args.max_seeds is None else args.max_seeds
    if args.seeds != "auto":
        if (args.budget is not None or max_seeds != AutoSeeds.max_seeds or args.spending != DEFAULT_SPENDING
                or args.first_seed != 0):
            raise UsageError("--max-seeds, --first-seed, --budget and --spending belong to --seeds auto")
        return None
    if args.first_seed < 0:
        raise UsageError(f"--first-seed {args.first_seed} is not accepted; accepted: an integer >= 0")
    try:
        return AutoSeeds(max_seeds=max_seeds, budget_s=args.budget, spending=args.spending, first_seed=args.first_seed)
    except ValueError as exc:
        raise UsageError(f"--max-seeds {args.max_seeds}: {exc}") from None
