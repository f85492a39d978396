"""What the report pages share: the template environment, embedded images, links, number cells."""

from __future__ import annotations

import base64
import dataclasses
import math
import platform
import re
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from .. import __version__, tracking

DEFAULT_UI = "http://127.0.0.1:5000"


def _masked(value: Any) -> Any:
    """Every value a template prints, credentials masked (Jinja2's ``finalize``), whatever the page.

    Markup (``__html__``: a macro's output) is passed as it is: it was made of values masked here; so
    is an embedded image (``data_uri``), whose base64 could only be damaged by a pattern, never read.
    """
    if hasattr(value, "__html__") or (isinstance(value, str) and value.startswith("data:image/png;base64,")):
        return value
    return tracking.redact(value)


_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("bench.report", "templates"),
    autoescape=True,  # every value is text, whatever a run's name or tag holds
    finalize=_masked,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


class ReportError(ValueError):
    """Nothing to report (unknown name or run id, no finished runs), or nowhere safe to link to."""


@dataclasses.dataclass
class Report:
    out_dir: Path
    files: list[Path]
    summary: pd.DataFrame
    parent_run_id: str


def render(template: str, path: Path, **context: Any) -> Path:
    path.write_text(_TEMPLATES.get_template(template).render(**context), encoding="utf-8")
    return path


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "report"


def data_uri(path: Path) -> str:
    """A PNG as a ``data:`` URI, so each page stays one self-contained file."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def safe_link(url: Any) -> str | None:
    """Only http(s) addresses become links: a ``javascript:`` or ``data:`` URL from a file is shown, not followed."""
    text = str(url or "")
    return text if re.match(r"^https?://", text, re.I) else None


_UI_URL = re.compile(r"^https?://[^\s/?#]+\S*$", re.I)


class RunLinks:
    """Addresses of runs and models in the MLflow UI at ``ui_url``, which must be http(s)."""

    def __init__(self, ui_url: str, experiment_id: str) -> None:
        if not _UI_URL.match(ui_url):  # a javascript: or data: address would run code from every link
            raise ReportError(f"MLflow UI address {ui_url!r} is not accepted for run links; accepted: an http:// "
                              f"or https:// address, e.g. {DEFAULT_UI}")
        self.ui_url, self.experiment_id = ui_url, experiment_id

    def __call__(self, run_id: str) -> str:
        return f"{self.ui_url}/#/experiments/{self.experiment_id}/runs/{run_id}"

    def model(self, name: str, version: str) -> str:
        return f"{self.ui_url}/#/models/{name}/versions/{version}"


def definition(parent_id: str) -> tuple[str, str]:
    """The suite/study file logged with the parent run, as (file name, text)."""
    for artifact in tracking.list_artifacts(parent_id):
        if artifact.endswith(".toml"):
            return artifact, tracking.read_artifact_text(parent_id, artifact)
    return "", ""


def environment(tags: dict[str, str], **more: str) -> dict[str, str]:
    """The software and machine a parent run's report came from, for the page's Environment list."""
    return {
        "bench": f"{__version__} (commit {tags.get('bench.git_commit', 'unknown')})",
        "torch": f"{tags.get('torch.version', '?')} (CUDA {tags.get('torch.cuda', 'None')})",
        "python": tags.get("python.version", platform.python_version()),
        "platform": tags.get("host.platform", ""),
        **more,
    }


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def mean_std(mean: float, std: float) -> str:
    if is_missing(mean):
        return ""
    return f"{mean:.4f}" if is_missing(std) else f"{mean:.4f} ± {std:.4f}"


def number(value: Any, spec: str = ".4f") -> str:
    return "" if is_missing(value) else format(value, spec)
