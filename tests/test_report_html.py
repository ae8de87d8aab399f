"""The report's HTML opens in headless Chromium without errors (skipped where Chromium is absent).

An injected check script (added to a copy, never to the report) records JavaScript errors
and images that failed to decode into the DOM, which ``--dump-dom`` then returns.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gqnbench.report.build import build_report
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
