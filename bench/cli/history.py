"""``bench history SUITE[:PROFILE]``: every run of a suite over commits and machines, steps flagged."""

from __future__ import annotations

import argparse

from .common import DEFAULT_UI_URL, UsageError, ui_url


def add_parsers(sub) -> None:
    p = sub.add_parser("history", help="every parent run of a suite, oldest first, per machine: each row's mean, "
                                       "interval and verdict per run, with a step `bench diff` would fail flagged")
    p.add_argument("target", metavar="SUITE[:PROFILE]", help="the suite's name, optionally with a profile "
                                                           "(e.g. cifar2-chapter8:quick); default: every profile")
    p.add_argument("--out", help="write the HTML page, a PNG chart per row and the CSV here (default "
                                 "reports/history-<SUITE>[-<PROFILE>])")
    p.add_argument("--no-report", action="store_true", help="print the table only")
    p.add_argument("--fail-on-step", action="store_true",
                   help="exit 1 when the newest run on some machine has a flagged step (a row worse or broken "
                        "against the run before it), for a CI gate over the whole history")
    p.add_argument("--ui-url", type=ui_url, default=DEFAULT_UI_URL,
                   help=f"MLflow UI address for run links (default {DEFAULT_UI_URL})")
    p.set_defaults(func=cmd_history)


def cmd_history(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..report import history_page
    from ..report.pages import slug
    from ..suites.history import format_history, history
    from ..suites.spec import SuiteError

    try:
        found = history(args.target)
    except SuiteError as exc:
        raise UsageError(str(exc)) from None
    print(format_history(found))
    if not args.no_report:
        default = Path("reports") / slug(f"history-{args.target.replace(':', '-')}")
        out = Path(args.out) if args.out and args.out != "default" else default  # "default": MLproject's word
        report = history_page.build(found, out, args.ui_url.rstrip("/"))
        print(f"report: {report.out_dir / 'index.html'}")
    if args.fail_on_step and len(found.latest_flagged()):
        return 1
    return 0
