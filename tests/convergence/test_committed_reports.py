"""Every committed convergence report rebuilds byte for byte from its JSON with
``--report`` (no training): the reports in bench/results are what the code says."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fastmom import convergence as cv

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"
REPORTS = sorted(RESULTS.glob("convergence-*.json")) + sorted(RESULTS.glob("convergence-*/convergence-*.json"))


def test_the_committed_reports_are_found():
    assert len(REPORTS) >= 5, REPORTS


@pytest.mark.parametrize("json_path", REPORTS, ids=[str(p.relative_to(RESULTS)) for p in REPORTS])
def test_committed_report_regenerates_byte_identical(json_path, tmp_path, capsys):
    shutil.copy(json_path, tmp_path / json_path.name)
    # the report links the plots found beside the JSON: only their names matter here
    for png in json_path.parent.glob(f"{json_path.stem}*.png"):
        (tmp_path / png.name).touch()
    assert cv.main(["--report", str(tmp_path / json_path.name), "--no-plots"]) == 0
    md = json_path.with_suffix(".md")
    assert (tmp_path / md.name).read_bytes() == md.read_bytes()
