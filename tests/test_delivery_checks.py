"""A run takes each source's newest delivery on or before its reference date, and refuses,
by hand as on the schedule (thresholds in signals.toml), one dated too long before it, any
older objections (a late objection must never be missed), and one its body quarantined too
much of. Refused before anything is read: no run folder is left."""

from __future__ import annotations

import datetime as dt

import pytest
from conftest import write_delivery
from population import REFERENCE_DATE, write_population
from service_support import PASSPHRASE, prepare_deliveries

from flows.cli import main

LATER = (dt.date.fromisoformat(REFERENCE_DATE) + dt.timedelta(days=10)).isoformat()


def _with_a_bad_tax_row(folder):
    """The hand-made population, its tax extract with one row more that the body quarantines
    (a BSN that lost its leading zero)."""
    write_population(folder)
    lines = (folder / "tax" / REFERENCE_DATE / "data.csv").read_text().splitlines()
    rows = [line.split(",") for line in lines[1:]]
    rows.append(["12345678"] + rows[0][1:])
    write_delivery(folder, "tax", lines[0].split(","), rows, REFERENCE_DATE)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepare_deliveries(tmp_path_factory.mktemp("checks"), write_raw=_with_a_bad_tax_row)


def _run(prepared, tmp_path, monkeypatch, reference_date: str, config: str) -> int:
    from prefect.logging.handlers import APILogWorker

    monkeypatch.setenv("SIGNALS_KEYRING_PASSPHRASE", PASSPHRASE)
    (tmp_path / "signals.toml").write_text(config)
    args = ["run", "--config", str(tmp_path / "signals.toml"), "--reference-date", reference_date]
    args += ["--deliveries", str(prepared.deliveries), "--out", str(tmp_path / "runs")]
    code = main(args + ["--key-file", str(prepared.central_keyring)])
    APILogWorker.drain_all()  # the refused flow's logs, while its server runs
    return code


def _published(tmp_path) -> list:
    return sorted((tmp_path / "runs").glob("*/manifest.json"))


def test_a_delivery_older_than_the_reference_date_is_refused(
    prepared, tmp_path, monkeypatch, capsys
):
    assert _run(prepared, tmp_path, monkeypatch, LATER, "") == 2
    err = capsys.readouterr().err
    assert f"the newest brp delivery is dated {REFERENCE_DATE}, 10 day(s) before" in err
    assert "more than thresholds.max_delivery_age_days (0)" in err
    assert _published(tmp_path) == []


def test_older_objections_are_refused_whatever_age_the_other_sources_may_have(
    prepared, tmp_path, monkeypatch, capsys
):
    config = "[thresholds]\nmax_delivery_age_days = 31\n"
    assert _run(prepared, tmp_path, monkeypatch, LATER, config) == 2
    err = capsys.readouterr().err
    assert "the newest objections delivery is dated" in err
    assert "objections must be of the reference date itself" in err
    assert _published(tmp_path) == []


def test_a_manual_run_refuses_a_delivery_quarantined_beyond_the_threshold(
    prepared, tmp_path, monkeypatch, capsys
):
    config = "[thresholds]\nmax_quarantine_share = 0.01\n"
    assert _run(prepared, tmp_path, monkeypatch, REFERENCE_DATE, config) == 2
    err = capsys.readouterr().err
    assert f"tax/{REFERENCE_DATE}/manifest.json: 1 of " in err
    assert "more than thresholds.max_quarantine_share (1.0%)" in err
    assert _published(tmp_path) == []
    # Within the threshold the same deliveries run.
    config = "[thresholds]\nmax_quarantine_share = 0.5\n"
    assert _run(prepared, tmp_path, monkeypatch, REFERENCE_DATE, config) == 0
    assert len(_published(tmp_path)) == 1
