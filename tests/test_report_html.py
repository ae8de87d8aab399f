"""The report's HTML: the Markdown converter (status cells, round trips) and the page in headless Chromium.

The Chromium test is skipped where Chromium is absent.

An injected check script (added to a copy, never to the report) records JavaScript errors
and images that failed to decode into the DOM, which ``--dump-dom`` then returns.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from gqnbench.report.build import build_report
from gqnbench.report.document import (
    STATUSES,
    Document,
    Figure,
    Paragraph,
    Section,
    Table,
    render_html,
    render_markdown,
    status_cell,
)
from gqnbench.report.inputs import load_results

FIXTURES = Path(__file__).parent / "fixtures" / "report"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

CHECK = """
<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || e.type)), true);
window.addEventListener('load', () => {
  const broken = [...document.images].filter(i => !i.complete || i.naturalWidth === 0).length;
  const div = document.createElement('div');
  div.id = 'gqnbench-check';
  div.setAttribute('data-images', document.images.length);
  div.setAttribute('data-broken', broken);
  div.setAttribute('data-errors', window.__errors.join(' | '));
  div.setAttribute('data-tables', document.querySelectorAll('table').length);
  document.body.appendChild(div);
});
</script>
"""


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (.ci/run installs it)")
def test_html_opens_in_headless_chromium(tmp_path):
    out = tmp_path / "report"
    report = build_report(
        load_results([FIXTURES / "current"]), out, baseline=load_results([FIXTURES / "baseline"]), strict=True
    )
    html = report.html.read_text()
    checked = tmp_path / "checked.html"
    checked.write_text(html.replace("<head>", "<head>" + CHECK, 1))
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--dump-dom", checked.as_uri(),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    match = re.search(r'<div id="gqnbench-check"([^>]*)>', proc.stdout)
    assert match, "the check script did not run: " + proc.stderr[-2000:]
    attrs = dict(re.findall(r'data-(\w+)="([^"]*)"', match.group(1)))
    assert attrs["errors"] == ""
    assert attrs["broken"] == "0"
    assert int(attrs["images"]) == len(list((out / "figures").glob("*.png"))) >= 5
    assert int(attrs["tables"]) >= 15
    console = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln or "net::ERR" in ln]
    assert console == []
    # The same page as a screenshot: a real render, not only a parse.
    shot = tmp_path / "page.png"
    subprocess.run([*cmd[:-2], "--window-size=1200,1600", f"--screenshot={shot}", report.html.as_uri()],
                   capture_output=True, timeout=120, check=True)  # fmt: skip
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


# ---------------------------------------------------------------- the Markdown -> HTML converter


def _doc(tmp_path: Path, frame, blocks=()) -> Document:
    table = Table("t", "Cells of **status**", frame, "tables/t.csv", ["results/costs.json"])
    return Document("Title", [], [Section("One section", "one", [*blocks, table])])


def _cells(page: str) -> dict[str, str]:
    """Body cell text -> its class attribute ('' when none)."""
    return {text: cls for cls, text in re.findall(r'<td(?: class="([^"]*)")?>([^<]*)</td>', page)}


def test_status_marked_cells_are_coloured_and_plain_text_is_not(tmp_path):
    frame = pd.DataFrame(
        {
            "marked": [status_cell("REGRESSION", "bad"), status_cell("improved", "ok"), status_cell("late", "warn")],
            # Plain text that starts with the words the old converter coloured by prefix.
            "plain": ["REGRESSION of a plain cell", "failed to parse, just text", "not reached by anyone here"],
        }
    )
    cells = _cells(render_html(_doc(tmp_path, frame)))
    assert cells["REGRESSION"] == "bad" and cells["improved"] == "ok" and cells["late"] == "warn"
    for text in frame["plain"]:
        assert cells[text] not in STATUSES
    # The Markdown shows the text only, and a marked cell still equals its text.
    md = render_markdown(_doc(tmp_path, frame))
    assert "| REGRESSION | REGRESSION of a plain cell |" in md and "class=" not in md
    assert status_cell("improved", "ok") == "improved"
    with pytest.raises(ValueError):
        status_cell("x", "good")


def test_markdown_round_trips_to_html(tmp_path):
    png = tmp_path / "f.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(64)))
    figure = Figure("f", "A *figure*", png, "figures/f.png", ["results/samples.json"])
    text = Paragraph("See [the costs](#one), `gqnbench costs --set model.z_channels=32` and **bold** 2 < 3.")
    frame = pd.DataFrame({"metric": ["step time"], "value": ["12.5 ms"]})
    page = re.sub(r">\s+<", "><", render_html(_doc(tmp_path, frame, [text, figure])))  # layout newlines aside
    md = render_markdown(_doc(tmp_path, frame, [text, figure]))
    assert "## One section" in md and "![A *figure*](figures/f.png)" in md
    assert '<section id="one"><h2>One section</h2>' in page and '<a href="#one">One section</a>' in page
    assert '<a href="#one">the costs</a>' in page and "<code>gqnbench costs --set model.z_channels=32</code>" in page
    assert "<strong>bold</strong> 2 &lt; 3." in page
    assert "<caption>Cells of <strong>status</strong></caption>" in page and '<div class="tw"><table>' in page
    assert (
        "<th>metric</th>" in page and '<td class="nw">step time</td>' in page and '<td class="num">12.5 ms</td>' in page
    )
    embedded = re.search(r'<img alt="A \*figure\*" src="data:image/png;base64,([^"]+)"', page)
    assert embedded and base64.b64decode(embedded.group(1)) == png.read_bytes()
    assert "<figcaption>A <em>figure</em></figcaption>" in page


def test_the_report_colours_the_cells_its_sections_mark(tmp_path):
    # End to end: a marked cell keeps its status through the sections' DataFrames (a pandas string
    # dtype that copied the text would drop it, and this would fail).
    report = build_report(
        load_results([FIXTURES / "current"]), tmp_path / "r", baseline=load_results([FIXTURES / "baseline"])
    )
    page = report.html.read_text()
    assert page.count('<td class="bad">REGRESSION</td>') >= 1
    assert page.count('<td class="warn">not reached (∞)</td>') >= 1
    assert page.count('<td class="ok">passed</td>') >= 1
    assert 'class="bad"' not in report.markdown.read_text()
