"""The ``bench`` command line (also ``python -m bench``): one module per command family.

Every setting is checked before any data is loaded; a bad one exits with status 2 and
a message naming the value and what is accepted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from . import diff, report, search, suite, train
from .common import EXIT_USAGE, UsageError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench", description="Train and compare image-classifier variants (see README.md)."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for family in (train, suite, diff, search, report):
        family.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    from ..data import DataError
    from ..train import NonFiniteLossError

    # MLflow draws a progress bar for every artifact it reads (a report reads many): lines, not information.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
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

