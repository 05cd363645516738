"""The report as a person sees it: headless Chromium renders it offline, with no console
error, and the screenshot shows the charts.

Chromium comes from Debian's packages: `make test` installs it when it is missing and we
run as root (as CI does). Without root the test is skipped and says why; as root a missing
Chromium is a failure, not a skip.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from report_runs import Cohort, write_run
from test_report import population

from flows.report import build_report

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--enable-logging=stderr",
    "--v=0",
]
CONSOLE = re.compile(r":CONSOLE[:(]\d*\)?\]? ?(.*)")


@pytest.fixture(scope="module")
def chromium() -> Path:
    if CHROMIUM.is_file():
        return CHROMIUM
    if os.geteuid() == 0:
        pytest.fail(
            "chromium is missing although we run as root: `make test` installs it "
            "(apt-get install chromium)"
        )
    pytest.skip(
        "chromium is not installed and only root can install it: run `make test` as "
        "root, or apt-get install chromium"
    )


def render(chromium: Path, page: Path, out: Path, what: list[str]) -> tuple[str, list[str]]:
    """Run Chromium on a file with a fresh profile; stdout and the console messages."""
    profile = out.parent / f"profile-{out.stem}"
    args = [str(chromium), *FLAGS, f"--user-data-dir={profile}", *what, page.as_uri()]
    done = subprocess.run(args, capture_output=True, text=True, timeout=180, cwd=out.parent)
    console = [m.group(1) for m in map(CONSOLE.search, done.stderr.splitlines()) if m]
    return done.stdout, console


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("chromium")
    run = write_run(
        root / "runs", population(gap_band="65-74") + [Cohort(4, "signalled", "WK000301", age=40)]
    )  # a small district: a hatched bar
    return build_report(run, root / "out" / "report.html")


def test_the_report_renders_without_console_errors_and_shows_its_charts(chromium, report):
    dom, console = render(chromium, report.html, report.html.with_suffix(".dom"), ["--dump-dom"])
    assert console == [], console
    assert dom.count('<svg class="chart"') >= 10
    assert 'class="bar"' in dom and 'class="suppressed"' in dom and 'class="dot"' in dom
    assert "coverage disparities flagged" in dom

    shot = report.html.parent / "report.png"
    _, console = render(
        chromium, report.html, shot, [f"--screenshot={shot}", "--window-size=1280,2000"]
    )
    assert console == [], console
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(png[16:20], "big") == 1280 and int.from_bytes(png[20:24], "big") == 2000
    blank = report.html.parent / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    blank_shot = report.html.parent / "blank.png"
    render(chromium, blank, blank_shot, [f"--screenshot={blank_shot}", "--window-size=1280,2000"])
    assert len(png) > 10 * len(blank_shot.read_bytes())  # text and charts, not an empty page


def test_the_console_check_catches_errors_and_blocked_loads(chromium, tmp_path):
    """The same harness on a broken page: script errors and blocked loads are reported."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><head><meta http-equiv='Content-Security-Policy' "
        "content=\"default-src 'none'; script-src 'unsafe-inline'\"></head><body>"
        "<img src='http://127.0.0.1:9/x.png'><script>console.error('bad');"
        "throw new Error('boom')</script></body></html>"
    )
    _, console = render(chromium, page, tmp_path / "broken.dom", ["--dump-dom"])
    text = " ".join(console)
    assert "bad" in text and "boom" in text and "Content Security Policy" in text
