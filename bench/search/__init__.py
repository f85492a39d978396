"""Hyper-parameter search with Optuna.

- ``spec``: the study file (schema, parsing, the trial's config);
- ``objective``: one trial (define-by-run space, pruning, a child MLflow run);
- ``run``: workers, resume, the summary and the registered best model;
- ``dashboard``: optuna-dashboard on the study's storage.
"""

from .dashboard import serve_dashboard
from .objective import Objective, PruningReporter
from .run import SearchOutcome, default_storage, load_study_data, make_pruner, open_study, run_search, run_worker
from .spec import SearchError, StudySpec, load_study

__all__ = [
    "Objective", "PruningReporter", "SearchError", "SearchOutcome", "StudySpec", "default_storage", "load_study",
    "load_study_data", "make_pruner", "open_study", "run_search", "run_worker", "serve_dashboard",
]
