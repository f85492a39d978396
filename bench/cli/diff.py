"""``bench diff A B``: two runs of a suite, row by row; exit status 1 when a row got worse."""

from __future__ import annotations

import argparse
import textwrap

from .common import DEFAULT_UI_URL, UsageError, fraction, ui_url

FAIL_ON = ("worse", "slower", "any", "never")


def add_parsers(sub) -> None:
    p = sub.add_parser("diff", help="compare two runs of a suite row by row (exit 1 when a row got worse, or is "
                                    "missing, failed or diverged in B)")
    p.add_argument("a", metavar="A", help="the reference: a parent run id, or SUITE[:PROFILE][~N] (its latest parent, "
                                          "or the N-th before it)")
    p.add_argument("b", metavar="B", help="the run compared with A, named the same way")
    p.add_argument("--margin", type=fraction,
                   help="the smallest difference of val accuracy that matters (default: A's suite margin)")
    p.add_argument("--seconds", action="store_true", help="also compare seconds per epoch (meaningful on one machine)")
    p.add_argument("--time-margin", type=fraction, default=0.05,
                   help="--seconds: ratios within 1 ± this count as the same speed (default 0.05)")
    p.add_argument("--fail-on", choices=FAIL_ON, default="worse",
                   help="exit 1 when a row is significantly worse or broken in B (missing, failed, diverged: the "
                        "default, worse), slower, either (any), or never")
    p.add_argument("--allow-other-plans", action="store_true",
                   help="compare A and B even when their plans differ (profile, data, a row's training settings, "
                        "seeds); the output then lists what differs. Default: refuse, naming the differences")
    p.add_argument("--out", help="write the HTML page, chart and CSV here (default reports/diff-<A>-<B>)")
    p.add_argument("--no-report", action="store_true", help="print the table only")
    p.add_argument("--ui-url", type=ui_url, default=DEFAULT_UI_URL, help=f"MLflow UI address for run links (default {DEFAULT_UI_URL})")
    p.set_defaults(func=cmd_diff)


def cmd_diff(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..report import diff_page
    from ..report.pages import slug
    from ..suites.diff import diff, failures, format_diff, plan_differences, resolve
    from ..suites.spec import SuiteError

    if args.fail_on in ("slower", "any") and not args.seconds:
        raise UsageError(f"--fail-on {args.fail_on} needs --seconds")
    try:
        a, b = resolve(args.a), resolve(args.b)
    except SuiteError as exc:
        raise UsageError(str(exc)) from None
    if a.parent_run_id == b.parent_run_id:
        raise UsageError(f"A and B are the same run ({a.parent_run_id}); name two runs, e.g. {a.name} and {a.name}~1")
    differences = plan_differences(a, b)
    if differences and not args.allow_other_plans:
        shown = "; ".join(differences[:8]) + (f"; and {len(differences) - 8} more" if len(differences) > 8 else "")
        raise UsageError(f"A and B ran different plans, so a difference between them need not be the code's: "
                         f"{shown}. Compare runs of the same plan, or pass --allow-other-plans to compare anyway")
    table = diff(a, b, margin=args.margin, seconds=args.seconds, time_margin=args.time_margin)
    failing = failures(table, args.fail_on) if args.fail_on != "never" else []
    print(format_diff(table, a, b, differences))
    if not args.no_report:
        default = Path("reports") / slug(f"diff-{a.title}-{b.title}")
        out = Path(args.out) if args.out and args.out != "default" else default  # "default": MLproject's word
        report = diff_page.build(table, a, b, out, args.ui_url.rstrip("/"), failing, differences)
        print(f"report: {report.out_dir / 'index.html'}")
    if failing:
        what = "worse than A or broken" if args.fail_on == "worse" else "worse, broken or slower"
        print("\n".join(textwrap.wrap(f"bench diff: B is {what} in: {'; '.join(failing)}", 100,
                                     subsequent_indent="    ")))
        return 1
    return 0
