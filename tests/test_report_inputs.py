"""Bad or unknown results files give one clear error naming the file; unrelated JSON in folders is skipped."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest

from gqnbench.report.build import build_report
from gqnbench.report.cli import main as report_main
from gqnbench.report.inputs import ReportInputError, load_results

FIXTURES = Path(__file__).parent / "fixtures" / "report"
RUN = FIXTURES / "current" / "training" / "gqn-main-seed0.json"


def _doc(path: Path) -> dict:
    return json.loads(path.read_text())


def _write(path: Path, doc) -> Path:
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


def test_invalid_json_names_the_file(tmp_path):
    _write(tmp_path / "broken.json", '{"kind": "training_run", ')
    with pytest.raises(ReportInputError, match=r"broken\.json: not valid JSON"):
        load_results([tmp_path])


def test_unknown_kind(tmp_path):
    doc = _doc(RUN) | {"kind": "mystery", "schema": "gqnbench.mystery/1"}
    _write(tmp_path / "m.json", doc)
    with pytest.raises(ReportInputError, match=r"m\.json: unknown results kind 'mystery'"):
        load_results([tmp_path])


def test_newer_schema(tmp_path):
    _write(tmp_path / "n.json", _doc(RUN) | {"schema": "gqnbench.training_run/99"})
    with pytest.raises(ReportInputError, match=r"n\.json: schema .* is newer"):
        load_results([tmp_path / "n.json"])


def test_missing_field_and_bad_item(tmp_path):
    doc = _doc(RUN)
    del doc["eval_curve"]
    _write(tmp_path / "a.json", doc)
    with pytest.raises(
        ReportInputError, match=r"a\.json: not a valid 'training_run' results file: field eval_curve: Field required"
    ):
        load_results([tmp_path / "a.json"])
    doc = _doc(RUN)
    del doc["eval_curve"][3]["val_nll"]
    _write(tmp_path / "b.json", doc)
    with pytest.raises(
        ReportInputError,
        match=r"b\.json: not a valid 'training_run' results file: field eval_curve\.3\.val_nll: Field required",
    ):
        load_results([tmp_path / "b.json"])


def test_bad_pytest_benchmark(tmp_path):
    doc = _doc(FIXTURES / "current" / "benchmarks" / "0001_current.json")
    del doc["benchmarks"][1]["stats"]["median"]
    _write(tmp_path / "bench.json", doc)
    with pytest.raises(ReportInputError, match=r"bench\.json: pytest-benchmark JSON: benchmarks\[1\]"):
        load_results([tmp_path])


def test_unrelated_json_skipped_in_folders_but_not_when_named(tmp_path):
    other = _write(tmp_path / "package.json", {"name": "x"})
    shutil.copy(RUN, tmp_path / "run.json")
    results = load_results([tmp_path])
    assert [f.kind for f in results.files] == ["training_run"] and results.ignored == [other.resolve()]
    with pytest.raises(ReportInputError, match=r"package\.json: neither a gqnbench results file"):
        load_results([other])
    with pytest.raises(ReportInputError, match=r"nothere: no such results file or folder"):
        load_results([tmp_path / "nothere"])


def test_bad_png_in_samples_names_file_and_field(tmp_path):
    doc = _doc(FIXTURES / "current" / "samples.json")
    doc["scenes"][1]["predictions"]["gqn"] = base64.b64encode(b"not a png").decode()
    _write(tmp_path / "samples.json", doc)
    with pytest.raises(
        ReportInputError, match=r"samples\.json: scenes\[1\]\.predictions\.gqn: not a base64-encoded PNG"
    ):
        build_report(load_results([tmp_path]), tmp_path / "out")


def test_cli_reports_bad_file_with_exit_code_2(tmp_path, capsys):
    _write(tmp_path / "broken.json", "[1, 2")
    assert report_main([str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "broken.json" in err and "not valid JSON" in err and "Traceback" not in err
    assert report_main([str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2


def test_report_output_folder_inside_inputs_is_not_read_back(tmp_path):
    shutil.copy(RUN, tmp_path / "run.json")
    out = tmp_path / "report"
    assert report_main([str(tmp_path), "--out", str(out)]) == 0
    assert report_main([str(tmp_path), "--out", str(out)]) == 0  # provenance.json of run 1 is not an input
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["inputs"] == ["../run.json"] and prov["ignored"] == []
