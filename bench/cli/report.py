"""``bench report``: the HTML + PNG report of a suite or study, rebuilt from MLflow."""

from __future__ import annotations

import argparse

from .common import DEFAULT_UI_URL, UsageError, ui_url, write_report


def add_parsers(sub) -> None:
    p = sub.add_parser("report", help="write the HTML + PNG report of a suite or study from MLflow")
    p.add_argument("target", help="suite or study name (its latest parent run) or a parent run id")
    p.add_argument("--out", help="output folder (default reports/<name>)")
    p.add_argument("--ui-url", type=ui_url, default=DEFAULT_UI_URL, help=f"MLflow UI address for run links (default {DEFAULT_UI_URL})")
    p.add_argument("--no-log", action="store_true", help="do not also log the report as artifacts of the parent run")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from ..report import ReportError

    try:
        write_report(args.target, args.out, args.ui_url, log=not args.no_log)
    except ReportError as exc:
        raise UsageError(str(exc)) from None
    return 0
