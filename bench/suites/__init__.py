"""Suites: declared experiments of rows x seeds, run as MLflow parent and child runs.

- ``spec``: the suite file (schema, parsing, ``Suite.plan``);
- ``rounds``: the seeds design (fixed, or rounds of ``--seeds auto``) and the looks taken;
- ``parent``: the parent and child runs, resume, what the parent records;
- ``workers``: the one pair loop, in this process or in worker processes;
- ``run``: ``run_suite``: the rounds loop, whoever trains the pairs;
- ``summary``: every row of the plan, failures counted, mean ± std, verdicts, published numbers;
- ``diff``: ``bench diff A B``.
"""

from .parent import SuiteFailed, SuiteOutcome
from .run import run_suite, run_suite_workers
from .spec import Row, Suite, SuiteError, load_suite, parse_suite, plan_digest
from .summary import format_summary, summarize

__all__ = [
    "Row", "Suite", "SuiteError", "SuiteFailed", "SuiteOutcome", "format_summary", "load_suite", "parse_suite",
    "plan_digest", "run_suite", "run_suite_workers", "summarize",
]
