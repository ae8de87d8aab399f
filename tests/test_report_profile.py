"""The report's "Where the time goes" section, built from the committed profile fixture (no model, no torch)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from gqnbench.report.build import build_report
from gqnbench.report.inputs import load_results
from gqnbench.report.sections.profile import collect_cases, furthest_below_peak
from gqnbench.schema.profile import ProfileCase

FIXTURE = Path(__file__).parent / "fixtures" / "report" / "profile"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    report = build_report(load_results([FIXTURE]), out, strict=True)
    return out, report.markdown.read_text(), json.loads((FIXTURE / "profile.json").read_text())


def test_section_has_both_models_and_every_part(built):
    out, md, _ = built
    section = md[md.index("## Where the time goes") :]
    section = section[: section.index("\n## ", 5)]
    for part in ("GQN: phases of one training step", "proposed (metagqn): phases of one training step",
                 "The profiler's cost", "Top 5 operators", "furthest below the matmul peak",
                 "figures/profile_phases.png", "ui.perfetto.dev"):  # fmt: skip
        assert part in section, part
    assert (out / "figures" / "profile_phases.png").stat().st_size > 0
    prov = json.loads((out / "provenance.json").read_text())
    assert any(a["artifact"] == "tables/profile_phases_gqn.csv" and a["sources"] for a in prov["artifacts"])


def test_phase_table_numbers_come_from_the_file(built):
    out, _, doc = built
    table = pd.read_csv(out / "tables" / "profile_phases_gqn.csv")
    gqn = [c for c in doc["cases"] if c["model"] == "gqn"]
    assert len(table) == sum(len(c["phases"]) for c in gqn)
    fp32 = next(c for c in gqn if c["dtype"] == "fp32" and c["formulation"] == "folded")
    rows = table[(table["dtype"] == "fp32") & (table["formulation"] == "folded")]
    assert list(rows["phase"]) == [r["phase"] for r in fp32["phases"]]
    assert rows["time_s"].tolist() == pytest.approx([r["time_s"] for r in fp32["phases"]])
    over = pd.read_csv(out / "tables" / "profile_overhead.csv")
    assert set(over["trace_file"]) == {c["trace_file"] for c in doc["cases"]}
    assert over["profiled_over_plain"].tolist() == pytest.approx([c["overhead"]["profiled_over_plain"] for c in
                                                                 sorted(doc["cases"], key=lambda c: (c["model"], c["formulation"] != "folded", c["dtype"] != "fp32"))])  # fmt: skip


def test_newest_file_wins_and_lowest_share_of_peak(tmp_path):
    doc = json.loads((FIXTURE / "profile.json").read_text())
    newer = dict(doc, created="2099-01-01T00:00:00+00:00", cases=doc["cases"][:1])
    (tmp_path / "a.json").write_text(json.dumps(doc))
    (tmp_path / "b.json").write_text(json.dumps(newer))
    cases, superseded = collect_cases(load_results([tmp_path]).of_kind("profile"))
    assert superseded == 1 and len(cases) == len(doc["cases"])
    assert sum(f.path.name == "b.json" for f, _ in cases) == 1
    case = doc["cases"][0]
    low = furthest_below_peak(ProfileCase.model_validate(case))
    rated = [r["share_of_peak"] for r in case["phases"] if r["share_of_peak"] is not None and r["flop"]]
    assert low is not None and low.share_of_peak == min(rated)


def test_no_profile_is_a_note_and_traces_are_not_scanned(tmp_path):
    (tmp_path / "x.pt.trace.json").write_text('{"traceEvents": []}')
    results = load_results([tmp_path])
    assert not results.files and not results.ignored
    md = build_report(results, tmp_path / "out", strict=True).markdown.read_text()
    assert "No profile results among the inputs" in md


def test_a_busy_host_is_flagged(tmp_path):
    doc = json.loads((FIXTURE / "profile.json").read_text())
    case = doc["cases"][0]
    case["overhead"]["profiled_over_plain"] = 10.9  # a profiled step slowed by another job
    (tmp_path / "profile.json").write_text(json.dumps(dict(doc, cases=[case])))
    md = build_report(load_results([tmp_path]), tmp_path / "out", strict=True).markdown.read_text()
    assert "the host was not quiet" in md
