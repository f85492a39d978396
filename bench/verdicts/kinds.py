"""The kinds of verdict a comparison ends in (what reports colour and ``bench diff`` exits on)."""

BASELINE = "baseline"
BETTER = "better"
WORSE = "worse"
EQUIVALENT = "equivalent"
IDENTICAL = "identical"  # every seed gave the same number on both sides: no test needed, no error possible
UNDECIDED = "undecided"
UNJUDGED = "not judged"
