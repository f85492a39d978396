"""A fresh install is the tested install: every third-party import is declared in pyproject.toml.

deptry reads the imports of bench/, tests/ and benchmarks/ and the declared dependencies (with
the module names of ``[tool.deptry.package_module_name_map]``); an import of a package that is
not declared (DEP001), or that only arrives as another package's dependency (DEP003, how
``tomli_w`` and ``matplotlib`` slipped through once), fails this test.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def deptry(config: Path) -> subprocess.CompletedProcess:
    binary = shutil.which("deptry", path=str(Path(sys.executable).parent)) or shutil.which("deptry")
    assert binary, "deptry is part of the test extra: pip install -e '.[test]'"
    return subprocess.run([binary, ".", "--config", str(config), "--no-ansi"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_every_third_party_import_is_declared():
    result = deptry(REPO / "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("distribution, module", [("tomli-w", "tomli_w"), ("requests", "requests")])
def test_removing_a_declaration_fails_naming_the_import(tmp_path, distribution, module):
    text = (REPO / "pyproject.toml").read_text()
    without = re.sub(rf'\s*"{re.escape(distribution)}[><=~!][^"]*",?', "", text, count=1)
    assert without != text, f"{distribution} is not declared in pyproject.toml"
    config = tmp_path / "pyproject.toml"
    config.write_text(without)
    result = deptry(config)
    assert result.returncode == 1
    assert re.search(rf"DEP00[13] '{module}' imported but", result.stdout + result.stderr), result.stdout
