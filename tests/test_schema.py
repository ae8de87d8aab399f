"""Every results kind has one typed schema: stored files validate, bad ones are refused naming file and field."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from gqnbench.results import load_result, read_result, write_result
from gqnbench.schema import PACKAGE_KINDS, ResultsDoc, SchemaError, schema_for
from gqnbench.schema.training import SweepDoc, TimeToTargetDoc

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "reports" / "example" / "results"
FIXTURES = Path(__file__).parent / "fixtures"
SWEEP = EXAMPLE / "sweep" / "sweep_model.z_channels.json"


def _results_files(*roots: Path) -> list[Path]:
    found = []
    for root in roots:
        for path in sorted(root.rglob("*.json")):
            if path.name.endswith(".pt.trace.json"):
                continue
            doc = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(doc, dict) and "kind" in doc and "schema" in doc:
                found.append(path)
    return found


def _payload(path: Path) -> tuple[str, dict]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    return doc["kind"], {k: v for k, v in doc.items() if k not in ("schema", "kind", "created", "environment")}


def test_every_package_kind_has_a_schema() -> None:
    expected = {"training_run", "time_to_target", "sweep", "samples", "costs", "main_job", "profile", "learning_study"}
    assert set(PACKAGE_KINDS) == expected
    assert all(schema_for(k) is not None and schema_for(k) is not ResultsDoc for k in PACKAGE_KINDS)


@pytest.mark.parametrize("path", _results_files(EXAMPLE, FIXTURES), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_stored_results_file_validates(path: Path) -> None:
    doc = read_result(path)
    assert isinstance(load_result(path), schema_for(doc["kind"]))


def test_the_example_holds_every_package_kind() -> None:
    kinds = {json.loads(p.read_text())["kind"] for p in _results_files(EXAMPLE)}
    assert kinds == set(PACKAGE_KINDS)


@pytest.mark.parametrize("kind", PACKAGE_KINDS)
def test_each_kind_round_trips_unchanged(tmp_path: Path, kind: str) -> None:
    source = next(p for p in _results_files(EXAMPLE) if json.loads(p.read_text())["kind"] == kind)
    _, payload = _payload(source)
    out = write_result(tmp_path / "copy.json", kind, payload, environment={"device": "cpu"})
    again = read_result(out, kind)
    assert {k: v for k, v in again.items() if k not in ("created", "environment")} == {
        k: v for k, v in json.loads(source.read_text()).items() if k not in ("created", "environment")
    }


def test_typed_document_reads_inf_and_null_floats(tmp_path: Path) -> None:
    _, payload = _payload(EXAMPLE / "time_to_target" / "time_to_target.json")
    payload["runs"][0] |= {"reached": False, "steps": None, "wall_s": math.inf, "best_val_nll": math.nan}
    path = write_result(tmp_path / "ttt.json", "time_to_target", payload, environment={})
    assert json.loads(path.read_text())["runs"][0]["wall_s"] == "inf"
    doc = load_result(path, "time_to_target")
    assert isinstance(doc, TimeToTargetDoc)
    assert doc.runs[0].wall_s == math.inf and doc.runs[0].best_val_nll is None and doc.runs[0].steps is None


def _write_raw(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(doc))
    return path


def test_wrong_type_names_file_and_field(tmp_path: Path) -> None:
    doc = json.loads(SWEEP.read_text())
    doc["runs"][3]["learned"] = "maybe"
    path = _write_raw(tmp_path, doc)
    with pytest.raises(SchemaError, match=r"sweep\.json: not a valid 'sweep' results file: field runs\.3\.learned"):
        read_result(path, "sweep")


def test_missing_required_field_names_file_and_field(tmp_path: Path) -> None:
    doc = json.loads(SWEEP.read_text())
    del doc["field"]
    path = _write_raw(tmp_path, doc)
    with pytest.raises(
        SchemaError, match=r"sweep\.json: not a valid 'sweep' results file: field field: Field required"
    ):
        load_result(path)


def test_bad_item_deep_in_a_list_names_its_path(tmp_path: Path) -> None:
    doc = json.loads((EXAMPLE / "profile.json").read_text())
    doc["cases"][1]["phases"][2]["time_s"] = "slow"
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(SchemaError, match=r"profile\.json: .*field cases\.1\.phases\.2\.time_s: "):
        read_result(path, "profile")


def test_write_of_an_invalid_payload_writes_nothing(tmp_path: Path) -> None:
    _, payload = _payload(SWEEP)
    good = write_result(tmp_path / "sweep.json", "sweep", payload, environment={})
    before = good.read_bytes()
    broken = dict(payload, runs=[{**payload["runs"][0], "seed": "zero"}])
    with pytest.raises(SchemaError, match=r"sweep\.json: not a valid 'sweep' results file: field runs\.0\.seed"):
        write_result(good, "sweep", broken, environment={})
    assert good.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["sweep.json"]
    with pytest.raises(SchemaError):
        write_result(tmp_path / "new.json", "sweep", {"field": "model.z_channels"}, environment={})
    assert not (tmp_path / "new.json").exists()


def test_typed_sweep_keeps_the_written_value_types() -> None:
    doc = load_result(SWEEP, "sweep")
    assert isinstance(doc, SweepDoc)
    assert [r.value for r in doc.runs] == [r["value"] for r in read_result(SWEEP)["runs"]]
    assert all(type(r.value) is int for r in doc.runs)


def test_unregistered_kind_checks_the_envelope_only(tmp_path: Path) -> None:
    path = write_result(tmp_path / "x.json", "some_plugin_kind", {"anything": [1, 2]}, environment={})
    assert read_result(path)["anything"] == [1, 2]
