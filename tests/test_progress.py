"""A long run says what it is doing: one line per stage on stderr (a terminal, or
SIGNALS_PROGRESS=1), with counts and seconds and never a pseudonym."""

from __future__ import annotations

import re

from bsn_scan import _hits
from population import HOUSEHOLDS
from service_support import PASSPHRASE, prepare_deliveries, run_args

from entitlement_rules.guard import PSEUDONYM_IN_TEXT
from flows.cli import main

STAGES = ("inputs:", "history:", "withheld on reading", "pipeline: running", "pipeline: done")
STAGES += ("finalised:", "audit log: appending", "published")


def test_a_run_reports_its_stages_in_order_without_personal_data(tmp_path, monkeypatch, capsys):
    prepared = prepare_deliveries(tmp_path)
    monkeypatch.setenv("SIGNALS_KEYRING_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("SIGNALS_PROGRESS", "1")
    capsys.readouterr()
    assert main(run_args(prepared, tmp_path / "runs")) == 0
    lines = [li for li in capsys.readouterr().err.splitlines() if re.match(r"\[ *\d", li)]
    said = [next((s for s in STAGES if s in li), None) for li in lines]
    assert said == list(STAGES), lines
    assert "7 deliveries checked" in lines[0]
    text = "\n".join(lines)
    assert not PSEUDONYM_IN_TEXT.search(text)
    bsns = {bsn for members in HOUSEHOLDS.values() for bsn, *_ in members}
    assert _hits(text, bsns) == []
