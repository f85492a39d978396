"""What the commands share: usage errors, argument types and argument groups."""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable
from typing import Any

EXIT_USAGE = 2
DEFAULT_UI_URL = "http://127.0.0.1:5000"


class UsageError(Exception):
    """Bad command-line input: reported as ``bench: error: ...`` with exit status 2."""


def knob_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return key.strip(), value.strip()


def or_default(kind: type) -> Callable[[str], Any]:
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


def checkpoint_policy(text: str) -> Any:
    from ..checkpoint import Policy

    try:
        return Policy.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_checkpoint_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("checkpoints (so a killed run can --resume; kept in $BENCH_CACHE_DIR/checkpoints)")
    g.add_argument("--checkpoint-every", type=checkpoint_policy, default="auto", metavar="N|auto",
                   help="save model, optimizer and RNG states every N epochs; auto (default) saves once the "
                        "training time since the last save is 100x what that save cost, i.e. <= 1%% overhead")
    g.add_argument("--no-checkpoint", action="store_true", help="write no checkpoints")


def add_tracking_arguments(p: argparse.ArgumentParser, default_experiment: str, optional: bool = False) -> None:
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


def seed_list(text: str) -> list[int] | str | None:
    """``3`` means seeds 0, 1, 2; ``0,5,7`` means exactly those; ``default`` the suite's; ``auto``
    rounds of seeds for the rows still undecided."""
    if text in ("default", "auto"):
        return None if text == "default" else "auto"
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            seeds = list(range(int(text)))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count (3), a list (0,5,7) or auto, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds):
        raise argparse.ArgumentTypeError(f"expected at least one seed, all >= 0, got {text!r}")
    return seeds


def ui_url(text: str) -> str:
    """``--ui-url``: the MLflow UI's address, which run and model links in reports start with.

    Only ``http://`` and ``https://`` with a host: a ``javascript:`` or ``data:`` address would
    make every link of a page run code when clicked.
    """
    if not re.match(r"^https?://[^\s/?#]+", text, re.I) or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not accepted; accepted: an http:// or https:// address of the MLflow UI, "
            f"e.g. {DEFAULT_UI_URL}")
    return text


def write_report(target: str, out: str | None, ui_url: str, log: bool = True) -> None:
    from ..report import build_report

    report = build_report(target, out, ui_url=ui_url, log=log)
    logged = f"; also logged to run {report.parent_run_id}" if log else ""
    print(f"report: {report.out_dir / 'index.html'} ({len(report.summary)} rows{logged})")


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction of accuracy in (0, 1), e.g. 0.01 for 1 point, got {text!r}")
    return value


def duration(text: str) -> float | None:
    """A wall-clock budget (``30m``, ``2h``), or ``none``."""
    from ..suites.rounds import parse_duration

    if text.lower() in ("none", "default"):
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def storage_url(text: str | None) -> str | None:
    """``--storage``, else ``$BENCH_STORAGE_URL`` (which keeps a password off command lines); None: no shared storage."""
    from ..workqueue.storage import STORAGE_ENV

    text = text if text not in (None, "") else os.environ.get(STORAGE_ENV)
    return None if text in (None, "", "default") else text
