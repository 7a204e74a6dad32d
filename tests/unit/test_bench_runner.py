"""``python -m load A ... + B ...``: how the runner splits one command into benchmarks."""

from __future__ import annotations

from load.__main__ import runs


def test_plus_separates_benchmarks_and_each_keeps_its_own_options() -> None:
    args = ["actors", "--smoke", "--json", "a.json", "+", "http", "--smoke", "+", "chaos"]
    assert runs(args) == [["actors", "--smoke", "--json", "a.json"], ["http", "--smoke"], ["chaos"]]
    assert runs(["core"]) == [["core"]]


def test_an_unknown_name_or_an_empty_run_is_refused() -> None:
    assert runs([]) is None
    assert runs(["nope"]) is None
    assert runs(["actors", "+"]) is None
    assert runs(["actors", "+", "+", "http"]) is None
