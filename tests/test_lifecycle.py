"""Signal lifecycle across runs: history loading, resolution in the stage, and three real runs.

The three runs use the hand-made population (tests/population.py) with a fatigue window of
3 months (a copy of privacy/proportionality.yaml with only that value changed):

    run 1  2025-01-01  signals H1, H10, H11 (new)
    run 2  2025-03-01  H1 now receives zorgtoeslag -> resolved (now_receiving); a new
                       entitled household H12 -> new, signalled; H10 and H11 unchanged ->
                       repeated, suppressed by fatigue (2 months < 3)
    run 3  2025-04-01  H10 -> repeated and signalled again (3 months after run 1); H11 has
                       left the BRP -> resolved (not_in_run); H12 -> repeated, suppressed by
                       fatigue (1 month); H1 still receives -> suppressed, no open episode
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import population
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from proportionality_stage import REF, candidate, history_row, run_stage

from pipelines import lifecycle
from pipelines.contract import SOURCES
from pipelines.evaluate import SIGNAL_SCHEMA
from pipelines.proportionality import DEFAULT_PATH

# -- resolution inside the stage --------------------------------------------------------------


@pytest.fixture(scope="module")
def resolutions(tmp_path_factory):
    batches = [
        [
            candidate("still_entitled"),
            candidate("now_receiving", already_receiving=True),
            candidate("no_longer_entitled", entitled=False, estimated_annual_amount=None),
            candidate("objected", objected=True),
            candidate("deregistered", deregistered=True),
            candidate("closed_before"),
        ],
        [candidate("other_scheme_only", scheme="kwijtschelding")],
    ]
    history = [
        history_row(name)
        for name in (
            "still_entitled",
            "now_receiving",
            "no_longer_entitled",
            "objected",
            "deregistered",
            "other_scheme_only",
            "gone",
        )
    ]
    history.append(history_row("closed_before", episode_open=False))
    history.append(history_row("gone_but_closed", episode_open=False))
    return run_stage(tmp_path_factory.mktemp("resolve"), batches, history)


def test_open_episodes_that_no_longer_hold_are_resolved_with_their_reason(resolutions):
    got = {r["household_pid"].removeprefix("h."): r["reason"] for r in resolutions["resolved"]}
    assert got == {
        "now_receiving": "now_receiving",
        "no_longer_entitled": "no_longer_entitled",
        "objected": "objected",
        "deregistered": "deregistered",
        "other_scheme_only": "not_evaluated",
        "gone": "not_in_run",
    }
    for row in resolutions["resolved"]:
        assert row["status"] == "resolved" and row["reference_date"] == REF
        assert row["signal_id"] == row["household_pid"].replace("h.", "s.", 1)
        assert row["last_run_id"] == "2024-01-01-earlier"


def test_candidates_get_new_repeated_or_resolved(resolutions):
    rows = resolutions["signals"] + resolutions["suppressed"]
    status = {r["household_pid"].removeprefix("h."): r["status"] for r in rows}
    assert status == {
        "still_entitled": "repeated",
        "closed_before": "new",
        "now_receiving": "resolved",
        "objected": "resolved",
        "deregistered": "resolved",
        "other_scheme_only": "new",
    }


# -- history from published runs ------------------------------------------------------------


def _publish(root, run_id: str, day: str, signals=(), resolved=(), retention=False):
    folder = root / run_id
    folder.mkdir(parents=True)
    manifest = {"run_id": run_id, "reference_date": day, "created_at": f"{day}T06:00:00+00:00"}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    rows = [
        {
            "signal_id": f"s.{h}",
            "run_id": run_id,
            "household_pid": f"h.{h}",
            "scheme": "zorgtoeslag",
            "benefit_year": 2025,
            "status": "new",
        }
        for h in signals
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=_signals_subset()), folder / "signals.parquet")
    lifecycle_rows = [
        {
            "signal_id": f"s.{h}",
            "run_id": run_id,
            "reference_date": dt.date.fromisoformat(day),
            "household_pid": f"h.{h}",
            "scheme": "zorgtoeslag",
            "benefit_year": 2025,
            "status": "resolved",
            "reason": "now_receiving",
            "last_signalled_on": None,
            "last_run_id": None,
        }
        for h in resolved
    ]
    table = pa.Table.from_pylist(lifecycle_rows, schema=lifecycle.LIFECYCLE_SCHEMA)
    pq.write_table(table, folder / "lifecycle.parquet")
    if retention:
        (folder / "retention.json").write_text("{}")
    return folder


def _signals_subset() -> pa.Schema:
    names = ("signal_id", "run_id", "household_pid", "scheme", "benefit_year", "status")
    return pa.schema([SIGNAL_SCHEMA.field(n) for n in names])


def _feedback(root, rows: list[tuple[str, str, str]], name="f1"):
    folder = lifecycle.feedback_folder(root)
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(
        [
            {
                "signal_id": f"s.{h}",
                "scheme": "zorgtoeslag",
                "outcome": outcome,
                "outcome_date": dt.date.fromisoformat(day),
                "household_pid": f"h.{h}",
                "benefit_year": 2025,
                "run_id": "r",
                "import_id": name,
                "row_number": i + 1,
            }
            for i, (h, outcome, day) in enumerate(rows)
        ],
        schema=lifecycle.FEEDBACK_SCHEMA,
    )
    pq.write_table(table, folder / f"{name}.parquet")


def _state(root, day="2025-06-01") -> dict[str, dict]:
    history = lifecycle.load_history(root, dt.date.fromisoformat(day))
    return {r["household_pid"].removeprefix("h."): r for r in history.state.to_pylist()}


def test_the_state_keeps_the_last_signal_and_whether_its_episode_is_open(tmp_path):
    _publish(tmp_path, "r1", "2025-01-01", signals=["a", "b", "c"])
    _publish(tmp_path, "r2", "2025-02-01", signals=["a"], resolved=["b"])
    _publish(tmp_path, "r3", "2025-03-01", signals=["b"])
    state = _state(tmp_path)
    assert state["a"]["last_signalled_on"] == dt.date(2025, 2, 1)
    assert state["a"]["last_run_id"] == "r2" and state["a"]["episode_open"]
    assert state["b"]["last_signalled_on"] == dt.date(2025, 3, 1) and state["b"]["episode_open"]
    assert state["c"]["episode_open"]
    _publish(tmp_path, "r4", "2025-04-01", resolved=["a"])
    assert not _state(tmp_path)["a"]["episode_open"]


def test_only_runs_with_an_earlier_reference_date_are_history(tmp_path):
    _publish(tmp_path, "r1", "2025-01-01", signals=["a"])
    _publish(tmp_path, "same_day", "2025-06-01", signals=["b"])
    _publish(tmp_path, "later", "2025-07-01", signals=["c"])
    (tmp_path / ".staging-x").mkdir()
    history = lifecycle.load_history(tmp_path, dt.date(2025, 6, 1))
    assert history.runs == ("r1",)
    assert set(_state(tmp_path)) == {"a"}


def test_a_run_whose_personal_data_was_destroyed_is_no_history(tmp_path):
    _publish(tmp_path, "r1", "2025-01-01", signals=["a"], retention=True)
    assert _state(tmp_path) == {}


def test_encrypted_signals_without_a_keyring_stop_the_run(tmp_path):
    folder = _publish(tmp_path, "r1", "2025-01-01", signals=["a"])
    (folder / "signals.parquet").rename(folder / "signals.parquet.enc")
    with pytest.raises(lifecycle.HistoryUnavailable, match="signals.parquet is encrypted"):
        lifecycle.load_history(tmp_path, dt.date(2025, 6, 1))


def test_the_newest_feedback_on_or_before_the_reference_date_is_the_case(tmp_path):
    _publish(tmp_path, "r1", "2025-01-01", signals=["a", "b", "c"])
    _feedback(
        tmp_path,
        [
            ("a", "contacted", "2025-02-01"),
            ("a", "applied", "2025-03-01"),
            ("b", "applied", "2025-03-01"),
            ("b", "granted", "2025-03-01"),  # same day: the further outcome wins
            ("c", "contacted", "2025-02-01"),
            ("c", "declined", "2025-06-02"),  # after the reference date: not known yet
        ],
    )
    state = _state(tmp_path)
    assert (state["a"]["case_outcome"], state["a"]["case_on"]) == ("applied", dt.date(2025, 3, 1))
    assert state["b"]["case_outcome"] == "granted"
    assert state["c"]["case_outcome"] == "contacted"


def test_runs_and_feedback_under_an_older_key_are_rekeyed_to_the_runs(tmp_path):
    """After a domain-key rotation `rekey` (privacy.pseudonyms.translate in a real run) maps
    earlier pseudonyms to the current key's: signals, resolutions and feedback alike."""
    _publish(tmp_path, "r1", "2025-01-01", signals=["a", "b"])
    _publish(tmp_path, "r2", "2025-02-01", resolved=["b"])
    _feedback(tmp_path, [("a", "applied", "2025-03-01")])

    def rekey(pids, run_ids):
        assert len(run_ids) == len(pids)  # each with the run it came from (body keys)
        return pa.compute.replace_substring(pids, "h.", "k.")

    history = lifecycle.load_history(tmp_path, dt.date(2025, 6, 1), rekey=rekey)
    state = {r["household_pid"]: r for r in history.state.to_pylist()}
    assert set(state) == {"k.a", "k.b"} and not state["k.b"]["episode_open"]
    assert state["k.a"]["case_outcome"] == "applied"
    assert history.fingerprint != lifecycle.load_history(tmp_path, dt.date(2025, 6, 1)).fingerprint


def test_the_fingerprint_follows_the_state_not_the_calendar(tmp_path):
    _publish(tmp_path, "r1", "2025-01-01", signals=["a"])
    first = lifecycle.load_history(tmp_path, dt.date(2025, 6, 1)).fingerprint
    assert lifecycle.load_history(tmp_path, dt.date(2025, 6, 1)).fingerprint == first
    _publish(tmp_path, "later", "2025-07-01", signals=["b"])  # not history of June
    assert lifecycle.load_history(tmp_path, dt.date(2025, 6, 1)).fingerprint == first
    _feedback(tmp_path, [("a", "applied", "2025-05-01")])
    assert lifecycle.load_history(tmp_path, dt.date(2025, 6, 1)).fingerprint != first


# -- three runs with changing inputs --------------------------------------------------------

H12 = population.B[20]
CHANGES = {
    "2025-01-01": {},
    "2025-03-01": {
        "HOUSEHOLDS": {**population.HOUSEHOLDS, "H12": [(H12, "1990-01-01", "head")]},
        "TAX": {**population.TAX, H12: (2024, "18000.00", "0.00", "definitive")},
        "BENEFITS": population.BENEFITS
        + [(population.B[0], "zorgtoeslag", "131.00", "2025-02-01", "")],
    },
}
CHANGES["2025-04-01"] = {
    **CHANGES["2025-03-01"],
    "HOUSEHOLDS": {k: v for k, v in CHANGES["2025-03-01"]["HOUSEHOLDS"].items() if k != "H11"},
}


def _runs(
    root: Path,
    days: list[str],
    rotate_before: str | None = None,
    rotate_body_before: str | None = None,
    link: bool = True,
    link_from_another_population: bool = False,
    remake_body_before: str | None = None,
) -> dict:
    """Run the flow on the CHANGES of each day; per run its outputs by household. With
    `rotate_before`, the central party rotates its domain key before that day's run; with
    `rotate_body_before` the key custodian rotates the body key, and (`link`) the
    controller makes the link table from that day's raw BRP delivery."""
    from flows.run import run_flow
    from privacy.body_links import make_links
    from privacy.keys import DEFAULT_DOMAIN, Keyring, load_keyring, save_keyring
    from privacy.pseudonymise import pseudonymise_delivery
    from privacy.pseudonyms import TwoLayerPseudonymiser

    body, central = Keyring(), Keyring()
    body.add("body")
    save_keyring(body, root / "body.keyring", "lifecycle passphrase")  # for the controller's
    for role, domain in (("domain", DEFAULT_DOMAIN), ("run-data", None), ("audit-signing", None)):
        central.add(role, domain)
    save_keyring(central, root / "central.keyring", "lifecycle passphrase")
    policy = yaml.safe_load(DEFAULT_PATH.read_text())
    policy["fatigue_months"]["value"] = 3
    (root / "policy.yaml").write_text(yaml.safe_dump(policy))
    names, runs, seen = {}, {}, set()
    for day in days:
        if day == rotate_before:
            central = load_keyring(root / "central.keyring", "lifecycle passphrase")
            central.rotate("domain", DEFAULT_DOMAIN)
            save_keyring(central, root / "central.keyring", "lifecycle passphrase")
        if day == rotate_body_before:
            body.rotate("body", None)
            save_keyring(body, root / "body.keyring", "lifecycle passphrase")
        if day == remake_body_before:  # a lost keyring made again: b1 again, another key
            body = Keyring()
            body.add("body")
        p = TwoLayerPseudonymiser(body.active("body"), central.active("domain", DEFAULT_DOMAIN))
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(population, "REFERENCE_DATE", day)
            for name, value in CHANGES[day].items():
                patch.setattr(population, name, value)
            population.write_population(root / "raw")
            seen |= set(population.HOUSEHOLDS)  # a household gone since is still resolved
            names |= {p.one("household_id", hh): hh for hh in seen}
        if day == rotate_body_before and link:
            controller = Keyring(body.keys + central.keys)
            brp = root / "raw" / "brp" / day
            if link_from_another_population:  # the same people under other household ids
                with pytest.MonkeyPatch.context() as patch:
                    patch.setattr(population, "REFERENCE_DATE", day)
                    others = {f"H{int(h[1:]) + 500}": m for h, m in population.HOUSEHOLDS.items()}
                    patch.setattr(population, "HOUSEHOLDS", others)
                    population.write_population(root / "other")
                brp = root / "other" / "brp" / day
            make_links(brp, controller, root / "runs", DEFAULT_DOMAIN)
        for source in SOURCES:
            pseudonymise_delivery(root / "raw" / source / day, body, root / "pseudo")
        folder = run_flow(
            deliveries=str(root / "pseudo"),
            reference_date=dt.date.fromisoformat(day),
            out=str(root / "runs"),
            buckets=2,
            key_file=str(root / "central.keyring"),
            proportionality_config=str(root / "policy.yaml"),
        )
        runs[day] = _outputs(folder, names, lifecycle.run_reader(central, root / "runs" / ".keys"))
    return runs


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory):
    """Run the flow three times on changing deliveries; per run its outputs by household."""
    root = tmp_path_factory.mktemp("three-runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SIGNALS_KEYRING_PASSPHRASE", "lifecycle passphrase")
        yield root, _runs(root, list(CHANGES))


def _outputs(folder, names, read) -> dict:
    """A published run's outputs by household name (encrypted ones opened in memory)."""
    folder = Path(folder)

    # The scenario is about zorgtoeslag; other schemes may signal the same households.
    def by_name(name):
        rows = read(folder, name).to_pylist()
        return {names[r["household_pid"]]: r for r in rows if r["scheme"] == "zorgtoeslag"}

    return {
        "folder": folder,
        "manifest": json.loads((folder / "manifest.json").read_text()),
        "signals": by_name("signals.parquet"),
        "suppressed": by_name("suppressed.parquet"),
        "resolved": by_name("lifecycle.parquet"),
        "all_signals": read(folder, "signals.parquet").to_pylist(),
        "all_resolved": read(folder, "lifecycle.parquet").to_pylist(),
    }


def _summary(run: dict) -> dict:
    return {
        "signals": {h: s["status"] for h, s in run["signals"].items()},
        "suppressed": {h: (s["status"], s["reasons"]) for h, s in run["suppressed"].items()},
        "resolved": {h: r["reason"] for h, r in run["resolved"].items()},
    }


def test_run_1_signals_every_entitled_household_as_new(three_runs):
    _, runs = three_runs
    summary = _summary(runs["2025-01-01"])
    assert summary["signals"] == {"H1": "new", "H10": "new", "H11": "new"}
    assert summary["resolved"] == {}
    assert summary["suppressed"]["H2"] == ("new", ["already_receiving"])
    assert summary["suppressed"]["H7"] == ("new", ["objection"])


def test_run_2_resolves_new_payment_signals_a_new_household_and_holds_back_repeats(three_runs):
    _, runs = three_runs
    summary = _summary(runs["2025-03-01"])
    assert summary["signals"] == {"H12": "new"}
    assert summary["suppressed"]["H10"] == ("repeated", ["fatigue"])
    assert summary["suppressed"]["H11"] == ("repeated", ["fatigue"])
    assert summary["suppressed"]["H1"] == ("resolved", ["fatigue", "already_receiving"])
    assert summary["resolved"] == {"H1": "now_receiving"}
    resolved = runs["2025-03-01"]["resolved"]["H1"]
    assert resolved["signal_id"] == runs["2025-01-01"]["signals"]["H1"]["signal_id"]
    assert resolved["last_signalled_on"] == dt.date(2025, 1, 1)
    assert resolved["last_run_id"] == runs["2025-01-01"]["manifest"]["run_id"]


def test_run_3_signals_again_after_the_window_and_resolves_a_household_that_left(three_runs):
    _, runs = three_runs
    summary = _summary(runs["2025-04-01"])
    assert summary["signals"] == {"H10": "repeated"}
    assert summary["suppressed"]["H12"] == ("repeated", ["fatigue"])
    assert summary["suppressed"]["H1"] == ("new", ["already_receiving"])
    assert "H11" not in summary["suppressed"]
    assert summary["resolved"] == {"H11": "not_in_run"}


def test_a_signalled_household_no_longer_entitled_is_resolved_so(tmp_path, monkeypatch):
    """The rules step passes on only entitled evaluations and those of households with an
    open episode: H1's refusal, the month its income rose past the limit, must still
    reach the resolution (without it H1 would look gone from the run)."""
    monkeypatch.setenv("SIGNALS_KEYRING_PASSPHRASE", "lifecycle passphrase")
    richer = {**population.TAX, population.B[0]: (2024, "60000.00", "1000.00", "definitive")}
    monkeypatch.setitem(CHANGES, "2025-02-01", {"TAX": richer})
    runs = _runs(tmp_path, ["2025-01-01", "2025-02-01"])
    assert _summary(runs["2025-01-01"])["signals"]["H1"] == "new"
    assert _summary(runs["2025-02-01"])["resolved"] == {"H1": "no_longer_entitled"}


def test_signal_ids_are_stable_across_runs(three_runs):
    _, runs = three_runs
    first = runs["2025-01-01"]["signals"]["H10"]["signal_id"]
    assert runs["2025-03-01"]["suppressed"]["H10"]["signal_id"] == first
    assert runs["2025-04-01"]["signals"]["H10"]["signal_id"] == first


def test_the_manifest_records_history_policy_and_counts(three_runs):
    root, runs = three_runs
    # The steps read the history from the run's scratch, which is not published.
    assert not list((root / "runs").rglob("history.parquet"))
    third = runs["2025-04-01"]["manifest"]["proportionality"]
    assert third["history"]["runs"] == [
        runs[d]["manifest"]["run_id"] for d in ("2025-01-01", "2025-03-01")
    ]
    statuses = [s["status"] for s in runs["2025-04-01"]["all_signals"]]
    assert third["signals_per_status"] == {s: statuses.count(s) for s in set(statuses)}
    reasons = [r["reason"] for r in runs["2025-04-01"]["all_resolved"]]
    assert third["resolved_per_reason"] == {r: reasons.count(r) for r in set(reasons)}
    assert third["suppressed_per_reason"]["fatigue"] >= 1
    assert third["policy"]["version"] != ""


def test_a_rerun_of_the_last_run_is_the_same_run(three_runs):
    from flows.run import run_flow

    root, runs = three_runs
    again = run_flow(
        deliveries=str(root / "pseudo"),
        reference_date=dt.date(2025, 4, 1),
        out=str(root / "runs"),
        buckets=2,
        key_file=str(root / "central.keyring"),
        proportionality_config=str(root / "policy.yaml"),
    )
    assert again == str(runs["2025-04-01"]["folder"])


def _log(root):
    from privacy.audit.log import LOG_DIRNAME, AuditLog

    return AuditLog(root / "runs" / LOG_DIRNAME)


def test_every_closed_episode_is_on_record_for_its_household(three_runs):
    """One `resolution` record per lifecycle row, the household as its subject: also for a
    household that left the run (H11 in run 3), of which the run has no member."""
    root, runs = three_runs
    for day, run in runs.items():
        records = _log(root).batch_records(run["manifest"]["run_id"])
        logged = sorted(
            (r["data_subject_pid"], json.loads(r["attributes"])["signal_id"], r["status"])
            + (json.loads(r["attributes"])["reason"],)
            for r in records.to_pylist()
            if r["name"] == "resolution"
        )
        rows = run["all_resolved"]
        assert logged == sorted(
            (r["household_pid"], r["signal_id"], "resolved", r["reason"]) for r in rows
        ), day
    left = runs["2025-04-01"]["resolved"]["H11"]
    assert left["reason"] == "not_in_run"


def test_decrypting_a_run_logs_the_household_that_left_it_too(three_runs, tmp_path):
    from privacy.keys import load_keyring
    from privacy.retention import decrypt_run

    root, runs = three_runs
    run = runs["2025-04-01"]
    ring = load_keyring(root / "central.keyring", "lifecycle passphrase")
    done = decrypt_run(run["folder"], ring, tmp_path / "plain", root / "runs" / ".keys")
    left = run["resolved"]["H11"]["household_pid"]
    records = _log(root).batch_records(_log(root).latest().batch_id)
    subjects = set(records.column("data_subject_pid").to_pylist())
    assert left in subjects and done.records == len(subjects) == records.num_rows
    run_records = _log(root).batch_records(run["manifest"]["run_id"])
    joined = run_records.filter(pa.compute.equal(run_records.column("name"), "join"))
    households = {json.loads(a)["household_pid"] for a in joined.column("attributes").to_pylist()}
    assert left not in households  # nothing else of the run names it


def test_a_domain_key_rotation_between_runs_keeps_every_households_history(three_runs, tmp_path):
    """Run 2 after a rotation (d1 -> d2) decides as it does without one: H10 and H11 are
    repeats held back by fatigue, H1's episode is resolved, not every household new."""
    _, runs = three_runs
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SIGNALS_KEYRING_PASSPHRASE", "lifecycle passphrase")
        rotated = _runs(tmp_path, ["2025-01-01", "2025-03-01"], rotate_before="2025-03-01")
    after = rotated["2025-03-01"]
    assert {r["household_pid"][:3] for r in after["all_signals"]} == {"d2."}
    assert _summary(after) == _summary(runs["2025-03-01"])
    assert (
        after["resolved"]["H1"]["signal_id"] == rotated["2025-01-01"]["signals"]["H1"]["signal_id"]
    )
    # The manifest says which key the run used and which keys its history was written with.
    manifest = after["manifest"]
    assert manifest["domain_key_id"] == "d2"
    assert manifest["proportionality"]["history"]["domain_keys"] == ["d1"]
    assert runs["2025-03-01"]["manifest"]["proportionality"]["history"]["domain_keys"] == ["d1"]
    from flows.runs import show_lines

    shown = "\n".join(show_lines(after["folder"]))
    assert "pseudonyms           domain key d2   history re-keyed from d1" in shown
    assert "re-keyed" not in "\n".join(show_lines(runs["2025-03-01"]["folder"]))


def test_a_body_key_rotation_keeps_every_households_history_through_the_link_table(
    three_runs, tmp_path
):
    """Run 2 after a body-key rotation (b1 -> b2) and the controller's link table decides as
    it does without one; without the table it stops, saying how to make it."""
    from flows.runs import show_lines
    from pipelines.lifecycle import HistoryUnavailable
    from privacy.audit.query import Filters, select
    from privacy.body_links import LinkError, link_path, make_links
    from privacy.keys import DEFAULT_DOMAIN, Keyring, load_keyring
    from privacy.pseudonyms import TwoLayerPseudonymiser

    _, runs = three_runs
    days = ["2025-01-01", "2025-03-01"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SIGNALS_KEYRING_PASSPHRASE", "lifecycle passphrase")
        linked = _runs(tmp_path / "linked", days, rotate_body_before=days[1])
        with pytest.raises(HistoryUnavailable) as refused:
            _runs(tmp_path / "unlinked", days, rotate_body_before=days[1], link=False)
        with pytest.raises(LinkError) as mislinked:
            _runs(
                tmp_path / "mislinked",
                days,
                rotate_body_before=days[1],
                link_from_another_population=True,
            )
    # The failed flow's log lines reach Prefect's API now, while its ephemeral server runs.
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all()
    after = linked[days[1]]
    assert after["manifest"]["inputs"]["brp"]["pseudonym_key_id"] == "b2"
    assert _summary(after) == _summary(runs[days[1]])
    assert after["resolved"]["H1"]["signal_id"] == linked[days[0]]["signals"]["H1"]["signal_id"]
    assert after["manifest"]["proportionality"]["history"]["body_links"] == ["b1->b2"]
    assert after["manifest"]["proportionality"]["history"]["unlinked_households"] == 0
    shown = "\n".join(show_lines(after["folder"]))
    assert "linked across body keys b1->b2" in shown
    message = str(refused.value)
    assert "made with body key b1 and this run's deliveries with b2" in message
    assert "signals keys link --brp" in message
    # A BRP of another population links none of the last old-key run's households: the
    # controller is refused, before anything is written or logged; --force links anyway.
    assert "the BRP delivery links only 0 of the" in str(mislinked.value)
    root = tmp_path / "mislinked"
    assert not link_path(root / "runs", "b1", "b2").exists()
    rings = [
        load_keyring(root / f"{n}.keyring", "lifecycle passphrase") for n in ("body", "central")
    ]
    controller = Keyring(rings[0].keys + rings[1].keys)
    forced = make_links(
        root / "other" / "brp" / days[1], controller, root / "runs", DEFAULT_DOMAIN, force=True
    )
    assert forced.covered == {"b1": "not checked (--force)"}
    # The controller's making of the table is on record: one record per household of the
    # day's BRP, naming its new (b2) pseudonym, and how much of the last b1 run it links.
    root = tmp_path / "linked"
    rings = [
        load_keyring(root / f"{n}.keyring", "lifecycle passphrase") for n in ("body", "central")
    ]
    b2 = TwoLayerPseudonymiser(rings[0].by_id("b2"), rings[1].active("domain", DEFAULT_DOMAIN))
    households = CHANGES[days[1]].get("HOUSEHOLDS", population.HOUSEHOLDS)
    made, _ = select(root / "runs" / "audit-log", Filters(operation="pseudonym_link"))
    assert sorted(made.column("data_subject_pid").to_pylist()) == sorted(
        b2.one("household_id", hh) for hh in households
    )
    covered = json.loads(made.column("attributes")[0].as_py())["covered"]["b1"]
    first = linked[days[0]]["folder"].name
    assert re.fullmatch(rf"(\d+) of the \1 households of run {first}", covered), covered


def test_a_body_keyring_made_again_instead_of_rotated_stops_the_run(tmp_path):
    """A keyring made again gives b1 again with another key: no household would link, and
    every one would be taken for new. The run is refused, saying why and what to do."""
    from pipelines.lifecycle import HistoryUnavailable

    days = ["2025-01-01", "2025-03-01"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SIGNALS_KEYRING_PASSPHRASE", "lifecycle passphrase")
        with pytest.raises(HistoryUnavailable) as refused:
            _runs(tmp_path, days, remake_body_before=days[1])
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all()
    message = str(refused.value)
    assert "was made with body key b1 of fingerprint" in message
    assert "made again instead of rotated" in message
    assert not list((tmp_path / "runs").glob("2025-03-01-*"))


def test_a_history_under_a_key_the_keyring_no_longer_holds_stops_the_run_saying_why(tmp_path):
    from flows.run import load_history
    from privacy.keys import DEFAULT_DOMAIN, Keyring

    folder = _publish(tmp_path, "r1", "2025-01-01", signals=["a"])
    signals = pq.read_table(folder / "signals.parquet")
    d1 = pa.array(["d1." + "a" * 32], pa.string())  # made with d1, deleted since
    pq.write_table(signals.set_column(2, "household_pid", d1), folder / "signals.parquet")
    ring = Keyring()
    ring.add("domain", DEFAULT_DOMAIN)
    ring.rotate("domain", DEFAULT_DOMAIN)
    ring.keys = [k for k in ring.keys if k.id != "d1"]
    with pytest.raises(lifecycle.HistoryUnavailable) as refused:
        load_history(str(tmp_path), dt.date(2025, 6, 1), ring, DEFAULT_DOMAIN, "b1")
    message = str(refused.value)
    assert message.startswith("the earlier runs' signals: ")
    assert "'d1'" in message and f"the kept runs and feedback in {tmp_path} were made" in message
