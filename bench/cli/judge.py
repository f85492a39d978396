"""``bench judge CURVES``: a suite's verdicts again from its curves.csv, under any measure and design."""

from __future__ import annotations

import argparse

from .common import UsageError

MEASURES = ("val_acc", "val_acc_last_k", "val_acc_ema")  # bench.suites.spec.MEASURES (checked by a test)
DESIGNS = ("paired", "unpaired")
DEFAULTS = {"measure": "val_acc_last_k", "design": "paired", "margin": 0.01}  # the suite's defaults (spec.py)


def add_parsers(sub) -> None:
    p = sub.add_parser("judge", help="judge a suite again from its learning curves (curves.csv) alone: any measure, "
                                     "paired or Welch, any rows or seeds; no MLflow store needed")
    p.add_argument("curves", help="a suite's curves.csv, or the report folder holding it "
                                  "(e.g. reports/examples/cifar2-chapter8-full)")
    p.add_argument("--baseline", help="the row every other row is compared with (default: the baseline of "
                                      "summary.csv beside the curves)")
    p.add_argument("--measure", choices=MEASURES,
                   help="what a run's one number is: val after the last epoch, the mean val of the last k epochs, "
                        "or val of the weights' moving average (default: the suite's, from summary.csv beside the "
                        "curves, else val_acc_last_k)")
    p.add_argument("--last-k", type=int, help="with val_acc_last_k: average this many last epochs (default: as the "
                                              "runs logged it)")
    p.add_argument("--design", choices=DESIGNS,
                   help="paired: seed by seed over the seeds both rows ran; unpaired: Welch (default: the suite's, "
                        "else paired)")
    p.add_argument("--margin", type=float,
                   help="the smallest difference that matters, a fraction of accuracy (default: the suite's, else "
                        "0.01 = 1 pt)")
    p.add_argument("--alpha", type=float, default=0.05, help="family-wise error rate over all rows (default 0.05)")
    p.add_argument("--rows", help="comma-separated rows to judge (default: every row in the curves)")
    p.add_argument("--seeds", help="comma-separated seeds to judge on (default: every seed in the curves), "
                                   "e.g. 0,1,2 for what three seeds would have said")
    p.set_defaults(func=cmd_judge)


def cmd_judge(args: argparse.Namespace) -> int:
    import textwrap
    from pathlib import Path

    import pandas as pd

    from ..suites.rejudge import RejudgeError, format_rejudged, rejudge

    path = Path(args.curves)
    if path.is_dir():
        path = path / "curves.csv"
    if not path.is_file():
        raise UsageError(f"no curves table at {path} (a suite's report folder holds curves.csv; "
                         "`bench report SUITE` writes one)")
    if not 0 < args.alpha < 1:
        raise UsageError(f"--alpha {args.alpha} must lie between 0 and 1 (e.g. 0.05)")
    seeds = None
    if args.seeds:
        try:
            seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise UsageError(f"--seeds {args.seeds!r}: expected comma-separated integers, e.g. 0,1,2") from None
    declared = _declared_beside(path)
    baseline = args.baseline or declared.get("baseline")
    if baseline is None:
        raise UsageError(f"no --baseline given and no summary.csv beside {path} names one: pass --baseline ROW")
    try:
        curves = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not a CSV table: {exc}") from None
    rows = [r.strip() for r in args.rows.split(",") if r.strip()] if args.rows else None
    chosen = {key: getattr(args, key) if getattr(args, key) is not None else declared.get(key, default)
              for key, default in DEFAULTS.items()}
    try:
        result = rejudge(curves, baseline, measure=chosen["measure"], design=chosen["design"],
                         margin=float(chosen["margin"]), alpha=args.alpha, last_k=args.last_k, rows=rows, seeds=seeds)
    except RejudgeError as exc:
        raise UsageError(f"{path}: {exc}") from None
    given = ", ".join(f"{key} {value}" for key, value in chosen.items())
    source = "the suite's (summary.csv)" if declared.keys() & DEFAULTS.keys() else "bench's defaults"
    print(f"baseline {baseline}; {given} (default: {source})")
    print(format_rejudged(result, chosen["measure"]))
    print()
    print(textwrap.fill(result.method, 100))
    return 0


def _declared_beside(curves) -> dict[str, str]:
    """What summary.csv beside the curves says the suite judged with: its baseline, and (reports since
    bench judge) its measure, design and margin."""
    import pandas as pd

    summary = curves.parent / "summary.csv"
    if not summary.is_file():
        return {}
    table = pd.read_csv(summary)
    out = {}
    label = next((c for c in ("variant_row", "label") if c in table), None)  # the report's name, the summary's
    for column in ("verdict_kind", "verdict"):
        if label and column in table and "baseline" not in out:
            found = table.loc[table[column] == "baseline", label]
            if len(found):
                out["baseline"] = str(found.iloc[0])
    for key in DEFAULTS:
        if key in table and table[key].notna().any():
            out[key] = table[key].dropna().iloc[0]
    return out
