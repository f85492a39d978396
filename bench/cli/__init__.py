"""The ``bench`` command line (also ``python -m bench``): one module per command family.

Every setting is checked before any data is loaded; a bad one exits with status 2 and
a message naming the value and what is accepted. Credentials are masked
(``bench.masking.redact``) in every error message and traceback the command line prints and in
every log record, bench's own and its libraries' (MLflow logs through a handler of its own); what
the commands print themselves is masked where it is made (``tracking.tracking_uri()`` is masked).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence

from . import diff, history, judge, report, search, suite, train
from .common import EXIT_USAGE, UsageError, ui_url

__all__ = ["build_parser", "main"]


def _redact(text: str) -> str:
    from ..masking import redact

    return redact(text)


class _Parser(argparse.ArgumentParser):
    """argparse's own errors quote the bad value: masked like every other message."""

    def exit(self, status: int = 0, message: str | None = None):
        super().exit(status, _redact(message) if message else message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bench", description="Train and compare image-classifier variants (see README.md).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")  # _Parser for every command
    for family in (train, suite, diff, history, judge, search, report):
        family.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    _mask_log_records()
    parser = build_parser()
    args = parser.parse_args(argv)
    from ..data import DataError
    from ..models import VariantError
    from ..specfile import SpecError
    from ..train import NonFiniteLossError

    if getattr(args, "ui_url", None) is not None:  # every command with --ui-url: its links are http(s) only
        try:
            args.ui_url = ui_url(args.ui_url)
        except argparse.ArgumentTypeError as exc:
            parser.exit(EXIT_USAGE, f"bench {args.command}: error: argument --ui-url: {exc}\n")
    # MLflow draws a progress bar for every artifact it reads (a report reads many): lines, not information.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow writes a link to each run it ends straight to stdout (no logging: nothing masks it) with the
    # tracking URI as given: not when that holds a password.
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    settings = {}
    if ("@" in uri or "=" in uri) and _redact(uri) != uri:
        settings[_NO_RUN_LINKS] = "true"
    if getattr(args, "no_system_metrics", False):  # an environment variable, so worker processes inherit it
        settings["BENCH_SYSTEM_METRICS"] = "0"
    try:
        with _mlflow_quiet(getattr(args, "quiet", False)), _environment(settings):
            return args.func(args)
    except (UsageError, SpecError) as exc:  # SpecError: a suite or study file that cannot run, e.g. not found
        parser.exit(EXIT_USAGE, f"bench: error: {exc}\n")
    except (DataError, NonFiniteLossError, VariantError) as exc:  # expected failures: a message, not a traceback
        print(f"bench: error: {_redact(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    except Exception:  # a bug or a failing service: the whole traceback, as Python prints it, masked
        print(_redact(traceback.format_exc()), end="", file=sys.stderr)
        return 1


_NO_RUN_LINKS = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"


@contextlib.contextmanager
def _environment(settings: dict[str, str]) -> Iterator[None]:
    """``settings`` in the environment while the command runs (its worker processes inherit them),
    then as they were: a caller that runs ``main`` in-process keeps its own."""
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _mlflow_quiet(quiet: bool) -> Iterator[None]:
    """``--quiet``: MLflow's INFO lines (four per run from its system-metrics monitor) are not printed,
    nor the two lines of links it prints to stdout for each run it ends.

    Both the level of MLflow's logger (MLflow may already be loaded) and ``MLFLOW_LOGGING_LEVEL``
    (read when MLflow is loaded, and by the worker processes this one starts) are set, and all of it
    is restored at the end, so a caller that runs ``main`` in-process keeps its own settings.
    """
    if not quiet:
        yield
        return
    logger = logging.getLogger("mlflow")
    settings = {"MLFLOW_LOGGING_LEVEL": "WARNING", _NO_RUN_LINKS: "true"}
    level, saved = logger.level, {name: os.environ.get(name) for name in settings}
    logger.setLevel(logging.WARNING)
    os.environ.update(settings)
    try:
        yield
    finally:
        logger.setLevel(level)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _mask_log_records() -> None:
    """Mask every log record as it is made, whichever logger and handler it goes to.

    A record factory rather than a filter on handlers: MLflow installs its own handler when it is
    loaded (after this runs), and a logger's filters never see records propagated from its children.
    """
    make = logging.getLogRecordFactory()
    if getattr(make, "bench_masks", False):
        return
    # A record made while one is being masked (by a logging call inside masking) passes as made
    # rather than recurse.
    busy = threading.local()

    def masked_record(*args, **kwargs) -> logging.LogRecord:
        record = make(*args, **kwargs)
        if not getattr(busy, "masking", False):
            busy.masking = True
            try:
                from ..masking import mask_record

                mask_record(record)
            finally:
                busy.masking = False
        return record

    masked_record.bench_masks = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(masked_record)
