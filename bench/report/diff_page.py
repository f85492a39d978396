"""The page of ``bench diff A B``: the table of verdicts, B against A, and its forest plot."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from .. import tracking
from ..suites.diff import Side, method_text
from ..suites.summary import percent, points
from . import charts
from .pages import Report, RunLinks, data_uri, environment, render


def build(table: pd.DataFrame, a: Side, b: Side, out: Path, ui_url: str, failing: list[str],
          differences: list[str] | None = None) -> Report:
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "diff.csv", index=False)
    chart = charts.verdicts_chart(
        table.rename(columns={"diff": "baseline_diff", "ci_low": "baseline_ci_low", "ci_high": "baseline_ci_high",
                              "kind": "verdict_kind"}),
        table.attrs["margin"], out / "diff.png", baseline="A", title="B against A, row by row")
    run_a, run_b = tracking.get_run(a.parent_run_id), tracking.get_run(b.parent_run_id)
    rows = [{
        "label": r["label"], "a": percent(r["a_mean"], r["a_std"]), "b": percent(r["b_mean"], r["b_std"]),
        "diff": points(r.get("diff"), r.get("ci_low"), r.get("ci_high")), "verdict": r["verdict"],
        "kind": str(r.get("kind", "")).replace(" ", "-"), "n": f"{r['n_a']} / {r['n_b']}",
        "test": r.get("test") if isinstance(r.get("test"), str) else "",
        "speed": "" if pd.isna(r.get("time_verdict")) else f"{r['time_ratio']:.2f}x, {r['time_verdict']}",
    } for _, r in table.iterrows()]
    page = render(
        "diff.html.j2", out / "index.html",
        sides=[{"name": "A", "title": a.title, "url": RunLinks(ui_url, run_a.info.experiment_id)(a.parent_run_id),
                "runs": len(a.runs)},
               {"name": "B", "title": b.title, "url": RunLinks(ui_url, run_b.info.experiment_id)(b.parent_run_id),
                "runs": len(b.runs)}],
        rows=rows, image=data_uri(chart), margin_pt=f"{table.attrs['margin'] * 100:g}", failing=failing,
        differences=differences or [], method=method_text(table),
        seconds="time_verdict" in table, generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        definition_name="", definition="", environment=environment(run_b.data.tags),
    )
    return Report(out, [chart, out / "diff.csv", page], table, b.parent_run_id)
