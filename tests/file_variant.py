"""A row whose variant is a file (``nets.py:Tiny``), so that a code change is a change of that file
alone and the plan (every setting a run logs) stays the same: what ``bench diff`` and ``bench history``
are for. The diff and history tests share the net, its regressions and the runner."""

from __future__ import annotations

import textwrap

from bench.suites import load_suite, run_suite

HEALTHY = '''
from torch import nn


class Tiny(nn.Module):
    """A hidden layer on the flattened image."""

    def __init__(self, shape, hidden={hidden}):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(shape.channels * shape.size ** 2, hidden), nn.ReLU(),
                                 nn.Linear(hidden, shape.num_classes))

    def forward(self, x):
        return self.net(x)
'''


def healthy(hidden: int) -> str:
    return HEALTHY.replace("{hidden}", str(hidden))


def broken(code: str) -> str:
    """A code change that makes the net's loss NaN at the first step."""
    return code.replace("return self.net(x)", "return self.net(x) * float('nan')  # the regression")


def worse(code: str) -> str:
    """A code change that squashes the logits: the net stays near chance."""
    return code.replace("return self.net(x)", "return self.net(x) * 1e-4  # the regression")


def run_with(root, name: str, suite_text: str, code: str, **kwargs) -> str:
    """``suite_text`` (as ``root/<name>.toml``) run quietly with ``code`` as ``root/nets.py``: its parent
    run id, also when it ends FAILED (a suite with diverged runs)."""
    (root / "nets.py").write_text(textwrap.dedent(code))
    path = root / f"{name}.toml"
    path.write_text(suite_text)
    try:
        return run_suite(load_suite(path), "quick", log_models=False, progress=False, echo=lambda _: None,
                         overrides={"threads": 1}, **kwargs).parent_run_id
    except Exception as exc:
        return exc.parent_run_id
