"""``bench diff``: two runs of one suite, row by row, as a gate for CI."""

from __future__ import annotations


import pytest

from bench.cli import main
from bench.suites import load_suite, run_suite

SUITE = """\
[suite]
name = "diff-test"
dataset = "mnist"
seeds = [0, 1, 2]
baseline = "softmax"

[defaults]
max_train_samples = 1500
batch_size = 50

[profiles.quick]
epochs = 1

[[variants]]
variant = "softmax"
{broken}

[[variants]]
variant = "lenet"
label = "lenet-narrow"
knobs = {{ width = 4 }}
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("diff")
    ids = {}
    for name, broken in (("a", ""), ("b", ""), ("broken", "lr = 3.0  # softmax's 0.03 times 100")):
        path = root / f"{name}.toml"
        path.write_text(SUITE.format(broken=broken))
        ids[name] = run_suite(load_suite(path), "quick", log_models=False, progress=False, echo=lambda _: None,
                              overrides={"threads": 1}).parent_run_id
    return ids


def test_a_rerun_with_the_same_seeds_is_no_worse(runs, capsys):
    assert main(["diff", runs["a"], runs["b"], "--no-report", "--seconds"]) == 0
    out = capsys.readouterr().out
    assert "significantly worse" not in out and "lenet-narrow" in out and "softmax" in out
    assert "+0.00" in out  # same seeds on the same machine: the same numbers


def test_a_deliberately_broken_row_fails_the_gate_naming_it(runs, capsys, tmp_path):
    assert main(["diff", runs["a"], runs["broken"], "--out", str(tmp_path / "page")]) == 1
    out = capsys.readouterr().out
    verdict = out.split("B is significantly worse than A in: ", 1)[1]
    assert verdict.startswith("softmax") and "lenet-narrow" not in verdict
    page = (tmp_path / "page" / "index.html").read_text()
    assert "Significantly worse in B" in page and "softmax" in page
    assert (tmp_path / "page" / "diff.png").stat().st_size > 0 and (tmp_path / "page" / "diff.csv").is_file()
    assert main(["diff", runs["a"], runs["broken"], "--no-report", "--fail-on", "never"]) == 0


def test_suites_are_named_by_their_latest_parents_and_bad_names_are_usage_errors(runs, capsys):
    assert main(["diff", "diff-test:quick~2", "diff-test:quick~1", "--no-report"]) == 0  # a and b, by name
    assert f"A: diff-test [quick] {runs['a'][:8]}" in capsys.readouterr().out
    for argv, message in ((["diff-test", "diff-test"], "are the same run"),
                          (["no-such-suite", "diff-test"], "found 0 parent run(s) of suite 'no-such-suite'"),
                          ([runs["a"], runs["b"], "--fail-on", "slower"], "--fail-on slower needs --seconds")):
        with pytest.raises(SystemExit) as exit_:
            main(["diff", *argv, "--no-report"])
        assert exit_.value.code == 2 and message in capsys.readouterr().err
