"""Suites: declared experiments of rows x seeds, run as MLflow parent and child runs.

- ``spec``: the suite file (schema, parsing, ``Suite.plan``);
- ``run``: serial runs, the parent and child runs, resume;
- ``workers``: the same pairs on worker processes and machines, through ``bench.workqueue``;
- ``summary``: mean ± std, verdicts, published numbers, and their formatting.
"""

from .run import SuiteFailed, SuiteOutcome, run_suite
from .spec import Row, Suite, SuiteError, load_suite, parse_suite, plan_digest
from .summary import format_summary, summarize
from .workers import run_suite_workers

__all__ = [
    "Row", "Suite", "SuiteError", "SuiteFailed", "SuiteOutcome", "format_summary", "load_suite", "parse_suite",
    "plan_digest", "run_suite", "run_suite_workers", "summarize",
]
