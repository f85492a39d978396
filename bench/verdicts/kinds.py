"""The kinds of verdict a comparison ends in (what reports colour and ``bench diff`` exits on)."""

BASELINE = "baseline"
BETTER = "better"
WORSE = "worse"
EQUIVALENT = "equivalent"
UNDECIDED = "undecided"
UNJUDGED = "not judged"
