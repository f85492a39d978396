"""The repository's promises about itself: CI runs what the README says."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_test_command() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Running the tests", 1)[1]
    return re.search(r"```bash\n(.+?)\n```", section, re.S).group(1).strip()


def test_ci_runs_exactly_the_readme_test_command():
    command = readme_test_command()
    assert "pytest" in command
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert command in ci_lines
    assert ci_lines[-1] == command  # nothing after it can change the exit status


def _ignored(path: str) -> bool:
    import subprocess

    return subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO).returncode == 0


def test_what_the_main_job_writes_is_ignored_and_the_examples_are_not():
    # `mlflow run .` writes these; after it, `git status --porcelain` must stay empty.
    for written in ("reports/cifar2-chapter8/index.html", "reports/cifar2-chapter8/accuracy.png", "mlflow.db",
                    "mlruns/0/meta.yaml", "mlartifacts/1/x", "optuna/cifar2-search.journal"):
        assert _ignored(written), written
    assert not _ignored("reports/examples/cifar2-chapter8-full/index.html")
