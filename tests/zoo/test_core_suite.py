"""The core suite's table of the memory-mapped path: one row per task and size, from the committed
records' layout and the older one-size layout; the study checks its sizes before it builds data."""

import json
from pathlib import Path

import pytest

from diffgym.zoo.benchmarks.core import SUITE, mapped_study, mapped_table
from diffgym.zoo.benchmarks.harness import Session
from diffgym.zoo.benchmarks.reporting import Report

RECORDS = Path(__file__).resolve().parents[2] / "zoo" / "results" / "larger-than-memory" / "core" / "studies"


def report(**studies):
    return Report(SUITE, [], {name: {"result": result, "hardware": {}} for name, result in studies.items()})


def study(name):
    return json.loads((RECORDS / f"{name}.json").read_text())["result"]


def table_rows(text):
    return [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]


def test_one_row_per_task_and_size_and_the_in_memory_row_once():
    rows = table_rows(mapped_table(report(data=study("data"), mapped=study("mapped"))))
    sizes = [row.split(" | ")[0].strip("| ") for row in rows]
    assert sizes == ["1,000,000"] * 4 + ["10,000,000"] * 3 + ["30,000,000"] * 3
    assert sum("in memory" in row for row in rows) == 1


def test_a_record_of_one_size_still_reads():
    one = study("mapped")["sizes"][1]
    rows = table_rows(mapped_table(report(mapped=one)))
    assert len(rows) == 3 and all(row.startswith("| 10,000,000 |") for row in rows)


@pytest.mark.parametrize("sizes", [1e6, [1000, "x"], [0], "many", [], True])
def test_bad_sizes_are_refused_with_the_setting_named(tmp_path, sizes):
    session = Session(
        SUITE, tmp_path, tmp_path, SUITE.budget, overrides=(f"suite:mapped_transitions={sizes!r}",)
    )
    with pytest.raises(ValueError, match="suite:mapped_transitions takes a number of rows"):
        mapped_study(session, [])
