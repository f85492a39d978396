"""The page of ``bench history``: a suite's rows across its parent runs, a chart per row, flagged steps."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from .. import tracking
from ..suites.history import History
from ..suites.spec import MEASURES
from . import charts
from .pages import Report, RunLinks, data_uri, render, slug


def build(found: History, out: Path, ui_url: str) -> Report:
    out.mkdir(parents=True, exist_ok=True)
    rows = found.rows
    rows.to_csv(out / "history.csv", index=False)
    charts_by_row = {label: charts.suite_row_history_chart(rows, label, out / f"history-{slug(label)}.png")
                     for label in dict.fromkeys(rows["row"])}
    machines = []
    for k, machine in enumerate(found.machines, start=1):
        mine = rows[rows["machine"] == machine]
        machines.append({"number": k, "name": machine, "rows": [{
            "row": r["row"], "run": f"#{r['run']}",
            "url": RunLinks(ui_url, str(r["experiment_id"]))(r["parent_run_id"]), "run_id": r["parent_run_id"],
            "date": r["start"].strftime("%Y-%m-%d %H:%M") if r["start"] == r["start"] else "",
            "commit": r["commit"], "status": r["status"], "seeds": int(r["seeds"]),
            "mean": "" if r["mean"] != r["mean"] else f"{r['mean'] * 100:.2f}",
            "interval": "" if r["ci_low"] != r["ci_low"] else f"[{r['ci_low'] * 100:.2f}, {r['ci_high'] * 100:.2f}]",
            "verdict": r["verdict"], "kind": str(r["verdict_kind"]).replace(" ", "-"), "step": r["step"],
            "step_kind": str(r["step_kind"]).replace(" ", "-"), "flagged": bool(r["flagged"]),
        } for _, r in mine.iterrows()]})
    shown = f"{found.name}:{found.profile}" if found.profile else found.name
    page = render(
        "history.html.j2", out / "index.html", title=shown, runs=found.runs, machines=machines,
        measures=", ".join(MEASURES.get(m, m) for m in dict.fromkeys(rows["measure"])),
        flagged=[f"{r['row']} at #{r['run']} ({r['commit'][:8]}): {r['step']}" for _, r in found.flagged.iterrows()],
        charts=[{"row": label, "image": data_uri(path), "file": path.name} for label, path in charts_by_row.items()],
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        definition_name="", definition="(each parent run's own suite file is logged with it)",
        environment={"tracking store": tracking.redact(tracking.tracking_uri())},
    )
    return Report(out, [*charts_by_row.values(), out / "history.csv", page], rows, "")
