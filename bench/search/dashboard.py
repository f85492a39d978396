"""optuna-dashboard on a study's own storage (``bench dashboard STUDY_FILE``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import optuna

from .. import tracking
from ..workqueue import is_database, open_storage
from .run import default_storage
from .spec import SearchError, StudySpec


def serve_dashboard(
    spec: StudySpec, storage: str | None = None, *, host: str = "127.0.0.1", port: int = 8080,
    echo: Callable[[str], None] = print,
) -> None:
    """Serve optuna-dashboard on the study's own storage (journal file or database) until Ctrl-C."""
    try:
        import optuna_dashboard
    except ImportError:
        raise SearchError("optuna-dashboard is not installed: pip install -e '.[dashboard]'") from None
    url = storage or default_storage(spec)
    if not is_database(url) and not Path(url.removeprefix("journal:")).is_file():
        raise SearchError(f"no study storage at {url}: run `bench search {spec.path}` first, or pass --storage")
    backend = open_storage(url)
    if spec.name not in {s.study_name for s in optuna.get_all_study_summaries(backend)}:
        raise SearchError(f"storage {tracking.redact(url)} holds no study named {spec.name!r}")
    echo(f"optuna-dashboard for study {spec.name} ({tracking.redact(url)}): http://{host}:{port}/dashboard/ (Ctrl-C stops it)")
    optuna_dashboard.run_server(backend, host=host, port=port)
