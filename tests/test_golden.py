"""Golden behaviour: every method's results on tiny synthetic data and the package's interfaces
(Arrow schemas, CLI parameters) equal tests/golden/*.json, to the last digit.

A failure names the case and the dotted paths of the first differences. Regenerate the files
(``python tests/golden_runs.py --write``) only for an intended change, stated in the commit;
see tests/golden_runs.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from golden_runs import (
    CASES,
    INTERFACES_FILE,
    METHODS_FILE,
    diff,
    interfaces,
    load,
    run_case,
)

from lt_ray.methods import METHODS

REGENERATE = "python tests/golden_runs.py --write (only for an intended change)"


@pytest.fixture(scope="module")
def golden() -> dict:
    return load(METHODS_FILE)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One artifacts folder for the module: a stage 1 shared by cases is trained once."""
    return tmp_path_factory.mktemp("golden-artifacts")


def test_cases_cover_every_method_and_the_golden(golden: dict) -> None:
    ids = [case_id for case_id, _ in CASES]
    assert len(set(ids)) == len(ids), f"duplicate case ids in golden_runs.CASES: {ids}"
    methods = {s.removeprefix("method.name=") for _, sets in CASES for s in sets
               if s.startswith("method.name=")}
    missing = sorted(set(METHODS.names()) - methods)
    assert not missing, f"registered methods without a golden case in golden_runs.CASES: {missing}"
    assert set(golden) == set(ids), (
        f"golden_runs.CASES and {METHODS_FILE.name} name different cases: only in CASES "
        f"{sorted(set(ids) - set(golden))}, only in the golden {sorted(set(golden) - set(ids))}; "
        f"{REGENERATE}")


@pytest.mark.parametrize(("case_id", "sets"), CASES, ids=[case_id for case_id, _ in CASES])
def test_method_matches_golden(case_id: str, sets: list[str], golden: dict, artifacts: Path,
                               tmp_path: Path) -> None:
    expected = golden.get(case_id)
    if expected is None:
        pytest.fail(f"golden case {case_id} is not in {METHODS_FILE.name}; {REGENERATE}")
    assert expected["sets"] == sets, (
        f"golden case {case_id}: its --set values changed since {METHODS_FILE.name} was "
        f"recorded; {REGENERATE}")
    actual = run_case(case_id, sets, tmp_path / "out", artifacts)
    differences = diff(expected, actual)
    assert not differences, (
        f"golden case {case_id} differs from {METHODS_FILE.name} (expected -> actual) at:\n  "
        + "\n  ".join(differences))


def test_interfaces_match_golden() -> None:
    differences = diff(load(INTERFACES_FILE), interfaces())
    assert not differences, (
        f"interfaces differ from {INTERFACES_FILE.name} (expected -> actual) at:\n  "
        + "\n  ".join(differences))


def test_diff_names_the_dotted_paths() -> None:
    expected = {"a": {"b": [1.0, 2.0], "c": 1}, "d": "x", "gone": 0}
    actual = {"a": {"b": [1.0, 2.0000000000000004], "c": 1.0}, "d": "x", "new": 0}
    assert diff(expected, actual) == [
        "gone: missing (expected 0)",
        "new: unexpected (new value 0)",
        "a.b[1]: 2.0 -> 2.0000000000000004",
        "a.c: 1 (int) -> 1.0 (float)",
    ]
    assert diff(expected, expected) == []
    assert len(diff(list(range(50)), list(range(1, 51)))) == 10
