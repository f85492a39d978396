"""``bench diff``: two runs of one suite, row by row, as a gate for CI."""

from __future__ import annotations

import re

import pytest

from bench.cli import main
from tests.file_variant import broken, healthy, run_with

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
{softmax}

[[variants]]
variant = "nets.py:Tiny"
label = "tiny"
"""

HEALTHY = healthy(hidden=8)
BROKEN = broken(HEALTHY)


def run(root, name: str, *, softmax: str = "", code: str = HEALTHY, **kwargs) -> str:
    return run_with(root, name, SUITE.format(softmax=softmax), code, **kwargs)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("diff")
    return {
        "a": run(root, "a"),
        "b": run(root, "b"),  # the same command again: the same seeds, the same numbers
        "broken": run(root, "broken", code=BROKEN),  # a code change that makes tiny's loss NaN
        "fewer-rows": run(root, "fewer-rows", rows=["softmax"]),
        "other-lr": run(root, "other-lr", softmax="lr = 3.0  # softmax's 0.03 times 100"),
        "other-seeds": run(root, "other-seeds", seeds=[0, 1]),
    }


def test_a_rerun_with_the_same_seeds_is_identical_row_by_row_and_passes(runs, capsys):
    assert main(["diff", runs["a"], runs["b"], "--no-report", "--seconds"]) == 0
    out = capsys.readouterr().out
    for label in ("softmax", "tiny"):
        assert re.search(rf"(?m)^ *{label} +3/3 .* identical \(every seed the same\)$", out), out
    assert "2 row(s) seed by seed, every seed the same (identical, no test needed)" in " ".join(out.split())
    assert "worse" not in out.split("B against A")[0]
    assert re.search(r"B against A per row, on mean val accuracy over the last \d+ epochs:", " ".join(out.split())), out


def test_a_row_broken_by_a_code_change_fails_the_gate_naming_it_and_why(runs, capsys, tmp_path):
    assert main(["diff", runs["a"], runs["broken"], "--out", str(tmp_path / "page")]) == 1
    out = capsys.readouterr().out
    gate = " ".join(out.split("B is worse than A or broken in: ", 1)[1].split())
    assert gate.startswith("tiny (B: 3 failed of 3 runs (seeds 0, 1, 2: NonFiniteLossError") and "softmax" not in gate
    assert re.search(r"(?m)^ *softmax +3/3 .* identical", out)  # the untouched row still compares
    page = (tmp_path / "page" / "index.html").read_text()
    assert "Worse or broken in B" in page and "NonFiniteLossError" in page
    assert (tmp_path / "page" / "diff.png").stat().st_size > 0 and (tmp_path / "page" / "diff.csv").is_file()
    assert main(["diff", runs["a"], runs["broken"], "--no-report", "--fail-on", "never"]) == 0


def test_a_row_missing_in_b_fails_the_gate(runs, capsys):
    assert main(["diff", runs["a"], runs["fewer-rows"], "--no-report"]) == 1
    assert "B is worse than A or broken in: tiny (missing in B)" in capsys.readouterr().out


@pytest.mark.parametrize("other, differs", [
    ("other-lr", "softmax: lr A 0.03, B 3.0"),
    ("other-seeds", "softmax: seeds A 0,1,2, B 0,1"),
])
def test_runs_of_different_plans_are_refused_naming_the_difference_unless_allowed(runs, capsys, other, differs):
    with pytest.raises(SystemExit) as exit_:
        main(["diff", runs["a"], runs[other], "--no-report"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "A and B ran different plans" in err and differs in err
    code = main(["diff", runs["a"], runs[other], "--no-report", "--allow-other-plans"])
    out = capsys.readouterr().out
    assert "Plans differ (compared because --allow-other-plans was given)" in out and differs in out
    if other == "other-lr":  # lr x 100: softmax's loss explodes in B, and that fails the gate
        assert code == 1 and "B is worse than A or broken in: softmax (B: " in out and "diverged" in out
    else:  # seeds 0,1 against 0,1,2: seed by seed over the two both ran, and those two are the same
        assert "2 row(s) seed by seed, every seed the same" in " ".join(out.split()) and "Welch" not in out


def test_two_runs_of_one_seeds_auto_schedule_are_one_plan_whatever_seeds_each_ended_with():
    import pandas as pd

    from bench.suites.diff import Side, plan_differences
    from bench.suites.summary import pair_outcomes

    def side(design: str, seeds: list[int]) -> Side:
        return Side("0" * 32, "s", "quick", pair_outcomes(pd.DataFrame()), {"net": seeds}, None, 0.01, "cifar2", design)

    auto = "auto start=3 step=2 max=9; margin 0.01; rows net"
    assert plan_differences(side(auto, [0, 1, 2, 3, 4]), side(auto, [0, 1, 2])) == []
    other = "auto start=3 step=2 max=7; margin 0.01; rows net"
    assert plan_differences(side(auto, [0, 1, 2]), side(other, [0, 1, 2, 3, 4])) == ["net: seeds A 0,1,2, B 0,1,2,3,4"]
    fixed = "seeds 0,1,2; margin 0.01; rows net"
    assert plan_differences(side(fixed, [0, 1, 2]), side("seeds 0,1; margin 0.01; rows net", [0, 1])) == [
        "net: seeds A 0,1,2, B 0,1"]


def test_suites_are_named_by_their_latest_parents_and_bad_names_are_usage_errors(runs, capsys):
    # The last two parents of diff-test are other-lr and other-seeds; ~4 and ~5 are a and b.
    assert main(["diff", "diff-test:quick~5", "diff-test:quick~4", "--no-report"]) == 0
    assert f"A: diff-test [quick] {runs['a'][:8]}" in capsys.readouterr().out
    for argv, message in ((["diff-test", "diff-test"], "are the same run"),
                          (["no-such-suite", "diff-test"], "found 0 parent run(s) of suite 'no-such-suite'"),
                          ([runs["a"], runs["b"], "--fail-on", "slower"], "--fail-on slower needs --seconds")):
        with pytest.raises(SystemExit) as exit_:
            main(["diff", *argv, "--no-report"])
        assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_a_changed_measure_or_design_is_another_plan():
    """Two runs judged on different measures are not a step in the code: `bench diff` asks for
    --allow-other-plans and `bench history` does not compare them."""
    import pandas as pd

    from bench.suites import parse_suite
    from bench.suites.diff import Side, plan_differences

    text = ('[suite]\nname = "m"\ndataset = "mnist"\nmeasure = "val_acc"\n[profiles.quick]\nepochs = 1\n'
            '[profiles.full]\nepochs = 2\nmeasure = "val_acc_ema"\n[[variants]]\nvariant = "softmax"\n')
    suite = parse_suite(text, "m.toml", check_variants=False)

    def side(profile: str, **changed) -> Side:
        import dataclasses

        judged = dataclasses.replace(suite.at_profile(profile), **changed)
        pairs = pd.DataFrame({"tags.bench.label": [], "pair_state": [], "seed": []})
        return Side("0" * 32, "m", profile, pairs, {"softmax": [0, 1]}, judged, 0.01, "mnist")

    assert plan_differences(side("quick"), side("quick")) == []
    assert plan_differences(side("quick"), side("quick", design="unpaired")) == [
        "measure: A val_acc, paired, B val_acc, unpaired"]
    assert "measure: A val_acc, paired, B val_acc_ema, paired" in plan_differences(side("quick"), side("full"))
