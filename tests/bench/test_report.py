"""The report writer, from a hand-written pytest-benchmark JSON (an ordinary test, run by `make test`)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest


def _report_module():
    spec = importlib.util.spec_from_file_location("bench_report", Path(__file__).with_name("report.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DATA = {
    "datetime": "2025-01-02T03:04:05",
    "machine_info": {"cpu_model": "Test CPU 9000", "cpu_count": 2, "cpu_affinity": 2, "mem_total": "8000000 kB",
                     "python_version": "3.11.9", "versions": {"tensorflow": "2.21.0", "keras": "3.15.1"}},
    "benchmarks": [
        {"name": "test_b", "extra_info": {"target": "2. cache", "ratio": 0.001, "comparison": "<=",
                                          "target_value": 0.02, "note": "fast | cheap"}},
        {"name": "test_a", "extra_info": {"target": "1. pipeline", "ratio": 0.8, "comparison": ">=",
                                          "target_value": 0.85, "note": "decode-bound"}},
        {"name": "test_c", "extra_info": {"target": "4. head", "ratio": 1.1, "comparison": "<=",
                                          "target_value": 1.1, "note": ""}},
    ],
}


def test_table_rows_and_met_flags(tmp_path):
    report = _report_module()
    source = tmp_path / "benchmark.json"
    source.write_text(json.dumps(DATA))
    out = tmp_path / "sub" / "report.md"
    assert report.main([str(source), str(out)]) == 0
    text = out.read_text()
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert table == [
        "| Target | Measured ratio | Target value | Met | Note |",
        "|---|---|---|---|---|",
        "| 1. pipeline | 0.8 | >= 0.85 | **no** | decode-bound |",
        "| 2. cache | 0.001 | <= 0.02 | yes | fast \\| cheap |",
        "| 4. head | 1.1 | <= 1.1 | yes |  |",
    ]
    assert "Test CPU 9000" in text and "TensorFlow: 2.21.0" in text and "2025-01-02" in text
    assert "**2 of 3 targets met.**" in text


def test_is_met_and_missing_ratio():
    report = _report_module()
    assert report.is_met(0.9, ">=", 0.85) is True
    assert report.is_met(1.2, "<=", 1.1) is False
    assert report.is_met(None, "<=", 1.1) is None
    with pytest.raises(ValueError):
        report.is_met(1.0, "==", 1.0)
    data = {"benchmarks": [{"name": "test_x", "extra_info": {}}]}
    assert "| test_x | not measured |  | n/a |  |" in report.table(data)


def test_usage_error(capsys):
    assert _report_module().main(["only-one"]) == 2
