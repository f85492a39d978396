"""``bench search`` and ``bench dashboard``."""

from __future__ import annotations

import argparse
import sys

from .common import DEFAULT_UI_URL, UsageError, add_tracking_arguments, or_default, storage_url, ui_url, write_report


def add_parsers(sub) -> None:
    p = sub.add_parser("search", help="Optuna search declared in a study file (studies/*_search.toml)")
    p.add_argument("file", help="study file, e.g. studies/cifar2_search.toml")
    p.add_argument("--n-trials", type=or_default(int), help="total trials the study should count (default: the file's); re-running resumes")
    p.add_argument("--storage", help="optuna storage: a journal file path (default optuna/<study>.journal) "
                                      "or postgresql://user@host/db for many machines ($BENCH_STORAGE_URL keeps a "
                                      "password off the command line)")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine, sharing the cores (default 1)")
    p.add_argument("--threads", type=or_default(int), help="torch threads per worker (default: cores / workers)")
    p.add_argument("--confirm", action=argparse.BooleanOptionalAction, default=None,
                   help="after the search, train its top configs and the baseline again over fresh seeds, judge them "
                        "and register the confirmed winner as <study>-best@champion (default: on when the study file "
                        "has a [confirm] table)")
    p.add_argument("--confirm-seeds", type=int, metavar="N",
                   help="fresh seeds per config for the confirmation (default: [confirm] seeds, else 3)")
    p.add_argument("--no-register", action="store_true", help="confirm, but register no champion")
    p.add_argument("--retest", action="store_true",
                   help="measure the confirmed winner's test accuracy even though this study's test was measured "
                        "already (test is measured once per study: a re-run with more trials reports the earlier "
                        "figure; a second look at test is no longer an untouched estimate)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--report", nargs="?", const="", metavar="DIR", help="write the study's report at the end")
    p.add_argument("--ui-url", type=ui_url, default=DEFAULT_UI_URL, help=f"MLflow UI address for the report's links (default {DEFAULT_UI_URL})")
    p.add_argument("--worker-of", help=argparse.SUPPRESS)
    p.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    add_tracking_arguments(p, default_experiment="the study's name")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("dashboard", help="open optuna-dashboard on a study's storage (pip install -e '.[dashboard]')")
    p.add_argument("file", help="study file, e.g. studies/cifar2_search.toml")
    p.add_argument("--storage", help="the study's storage (default optuna/<study>.journal, as bench search uses)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.set_defaults(func=cmd_dashboard)


def cmd_search(args: argparse.Namespace) -> int:
    from ..search import SearchError, load_study, run_search, run_worker

    try:
        spec = load_study(args.file)
    except SearchError as exc:
        raise UsageError(str(exc)) from None
    if args.n_trials is not None and args.n_trials < 1:
        raise UsageError(f"--n-trials {args.n_trials} is not accepted; accepted: an integer >= 1")
    if args.workers < 1:
        raise UsageError(f"--workers {args.workers} is not accepted; accepted: an integer >= 1")
    if args.confirm_seeds is not None and args.confirm_seeds < 2:
        raise UsageError(f"--confirm-seeds {args.confirm_seeds} is not accepted; accepted: an integer >= 2 (a verdict "
                         "needs two)")
    confirming = spec.confirm is not None if args.confirm is None else args.confirm
    if args.retest and not confirming:
        raise UsageError("--retest needs the confirmation (a [confirm] table or --confirm)")
    storage = storage_url(args.storage)
    if args.worker_of:  # one of --workers K processes, started by the coordinating one
        run_worker(spec, storage, args.n_trials or spec.n_trials, args.worker_of, threads=args.threads,
                   worker_index=args.worker_index)
        return 0
    try:
        outcome = run_search(
            spec, storage=storage, n_trials=args.n_trials, workers=args.workers, threads=args.threads,
            experiment=args.experiment, register_best=not args.no_register, confirm=args.confirm,
            confirm_seeds=args.confirm_seeds, retest=args.retest, progress=False if args.quiet else None,
        )
    except SearchError as exc:
        show(f"bench: {exc}", file=sys.stderr)
        return 1
    states = ", ".join(f"{n} {k.lower()}" for k, n in sorted(outcome.states.items()))
    show(f"study {outcome.study_name}: {outcome.n_trials} trials ({states}), {outcome.epochs_trained} epochs trained")
    for line in best_lines(outcome, spec.metric):
        show(line)
    show(f"parent run {outcome.parent_run_id}")
    if args.report is not None:
        write_report(outcome.parent_run_id, args.report or None, args.ui_url)
    return 0


def best_lines(outcome, metric: str) -> list[str]:
    """One line says "best": the confirmed winner when the search was confirmed (the one-seed best of
    the trials is biased upwards, and is named as what it is), else the one-seed best."""
    if outcome.best_trial is None:
        return []
    one_seed = f"trial {outcome.best_trial}, {metric} {outcome.best_value:.4f}"
    confirmation = outcome.confirmation
    if confirmation is None or confirmation.winner is None:
        return [f"best: {one_seed} (one seed, not confirmed), params {outcome.best_params}"]
    winner = confirmation.winner
    row = confirmation.summary.set_index("label").loc[winner.label]
    champion = (" (champion)" if confirmation.champion_run_id else "" if confirmation.holds_against_baseline
                else " (no champion)")
    return [f"search's one-seed best: {one_seed} (biased upwards: the winner's curse)",
            f"best: {winner.label}, confirmed {metric} {row['val_acc_mean']:.4f} ± {row['val_acc_std']:.4f} over "
            f"{len(confirmation.seeds)} fresh seeds, {row['verdict']} against {confirmation.baseline}{champion}; "
            f"params {winner.params}"]


def show(text: str, file=None) -> None:
    from ..search.confirm import wrapped

    for line in wrapped(text):
        print(line, file=file)


def cmd_dashboard(args: argparse.Namespace) -> int:
    from ..search import SearchError, load_study, serve_dashboard

    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} is not accepted; accepted: 1 to 65535")
    try:
        spec = load_study(args.file)
        serve_dashboard(spec, storage_url(args.storage), host=args.host,
                        port=args.port)
    except SearchError as exc:
        raise UsageError(str(exc)) from None
    return 0
