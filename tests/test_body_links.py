"""The controller's link table after a body-key rotation (privacy/body_links.py, `signals keys
link`); the central run's use of it is tested with real runs in test_lifecycle.py."""

from __future__ import annotations

import json
import stat

import population
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bsn_scan import scan_tree

from flows.cli import main
from privacy.audit.query import Filters, select
from privacy.body_links import LINK_SCHEMA, LinkError, link_path, make_links
from privacy.keys import DEFAULT_DOMAIN, KeyringError, load_keyring
from privacy.pseudonyms import TwoLayerPseudonymiser

BSNS = {bsn for members in population.HOUSEHOLDS.values() for bsn, *_ in members}


@pytest.fixture
def controller(tmp_path, passphrase):
    """A controller keyring whose body key was rotated (b1 retired, b2 active), and a raw BRP."""
    body, central, path = (tmp_path / f"{n}.keyring" for n in ("body", "central", "controller"))
    assert main(["keys", "init", "--key-file", str(body)]) == 0
    assert main(["keys", "init", "--role", "central", "--key-file", str(central)]) == 0
    assert main(["keys", "rotate", "--role", "body", "--key-file", str(body)]) == 0
    args = ["keys", "init", "--role", "controller", "--key-file", str(path)]
    assert main(args + ["--import", str(body), "--import", str(central)]) == 0
    population.write_population(tmp_path / "raw")
    return path, tmp_path / "raw" / "brp" / population.REFERENCE_DATE


def _runs_folder(root, ring):
    """An output folder whose audit log holds one batch, as after a central run."""
    from pipelines.audit_records import AuditContext, join_audit
    from privacy.audit.events import append_events
    from privacy.audit.signing import Signer

    households = pa.table(
        {"household_pid": ["d1." + "a" * 32], "member_pids": [["d1." + "b" * 32]]}
    )
    batch = join_audit(AuditContext("r1", DEFAULT_DOMAIN, "test"))(households.to_batches()[0])
    append_events(root / "audit-log", pa.Table.from_batches([batch]), "r1", Signer(ring))
    (root / "r1").mkdir()  # made with the old body key
    manifest = {"run_id": "r1", "inputs": {"brp": {"pseudonym_key_id": "b1"}}}
    manifest |= {"processing_activity_id": DEFAULT_DOMAIN, "register_version": "test"}
    (root / "r1" / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_the_link_table_maps_each_households_old_pseudonym_to_its_new_one(
    controller, tmp_path, passphrase, capsys
):
    path, brp = controller
    ring = load_keyring(path, passphrase)
    out = _runs_folder(tmp_path / "runs", ring)
    args = ["keys", "link", "--brp", str(brp), "--out", str(out), "--key-file", str(path)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    n = len(population.HOUSEHOLDS)
    assert f"{n:,} households linked (pseudonym_link records in the audit log" in printed
    table = link_path(out, "b1", "b2")
    assert str(table) in printed
    assert stat.S_IMODE(table.stat().st_mode) == 0o600

    domain = ring.active("domain", DEFAULT_DOMAIN)
    old, new = (TwoLayerPseudonymiser(ring.by_id(b), domain) for b in ("b1", "b2"))
    links = pq.read_table(table)
    assert links.schema == LINK_SCHEMA
    assert sorted(zip(*links.to_pydict().values(), strict=True)) == sorted(
        (old.one("household_id", hh), new.one("household_id", hh)) for hh in population.HOUSEHOLDS
    )
    # Logged, one record per household under its new pseudonym; no BSN anywhere.
    records, total = select(out / "audit-log", Filters(operation="pseudonym_link"))
    assert total == n
    assert set(records.column("data_subject_pid").to_pylist()) == set(
        links.column("new_pid").to_pylist()
    )
    assert scan_tree(out, BSNS) == {}


def test_without_a_rotation_or_a_controller_keyring_nothing_is_linked(
    tmp_path, passphrase, controller, capsys
):
    path, brp = controller
    ring = load_keyring(path, passphrase)
    # A folder that is not the central runs' (a typo): refused, nothing made there.
    args = ["keys", "link", "--brp", str(brp), "--out", str(tmp_path / "runz")]
    assert main(args + ["--key-file", str(path)]) == 2
    assert "no audit log there, so no central run to link" in capsys.readouterr().err
    assert not (tmp_path / "runz").exists()
    unrotated = type(ring)([k for k in ring.keys if k.id != "b1"])
    with pytest.raises(KeyringError, match="one body key \\(b2\\): there is no rotation to link"):
        make_links(brp, unrotated, tmp_path / "runs", DEFAULT_DOMAIN)
    central = type(ring)([k for k in ring.keys if k.role != "body"])
    with pytest.raises(KeyringError, match="not a controller keyring"):
        make_links(brp, central, tmp_path / "runs", DEFAULT_DOMAIN)
    assert not (tmp_path / "runs").exists()  # nothing written, nothing logged
    # Not the raw BRP; the audit log instead of its folder; a folder without old-key runs.
    out = _runs_folder(tmp_path / "runs", ring)
    pseudo = tmp_path / "pseudo"
    from privacy.pseudonymise import pseudonymise_delivery

    body_ring = type(ring)([k for k in ring.keys if k.role == "body"])
    pseudonymise_delivery(brp, body_ring, pseudo)
    for where, message, args in (
        (pseudo / "brp" / population.REFERENCE_DATE, "a pseudonymised delivery", ()),
        (brp, "the audit log; give the runs folder it is in", ("audit-log",)),
    ):
        with pytest.raises(LinkError, match=message):
            make_links(where, ring, out.joinpath(*args), DEFAULT_DOMAIN)
    made = {"pseudonym_key_id": "b1", "pseudonym_key_fingerprint": "not-b1s"}
    (out / "r1" / "manifest.json").write_text(json.dumps({"run_id": "r1", "inputs": {"brp": made}}))
    with pytest.raises(LinkError, match="of fingerprint not-b1s, the controller keyring holds"):
        make_links(brp, ring, out, DEFAULT_DOMAIN)
    (out / "r1" / "manifest.json").write_text(json.dumps({"run_id": "r1"}))
    with pytest.raises(LinkError, match="no kept run there was made with a retired body key"):
        make_links(brp, ring, out, DEFAULT_DOMAIN)
    assert not (out / "links").exists()


def test_linking_again_keeps_the_households_of_the_earlier_brp(controller, tmp_path, passphrase):
    """A second `keys link` from a BRP that lacks some households (another date) adds to
    the table: households linked before stay linked; both deliveries are on record."""
    import json

    path, brp = controller
    ring = load_keyring(path, passphrase)
    out = _runs_folder(tmp_path / "runs", ring)
    make_links(brp, ring, out, DEFAULT_DOMAIN)
    first = pq.read_table(link_path(out, "b1", "b2"))
    (first_id, members), *_ = population.HOUSEHOLDS.items()
    used = {b for ms in population.HOUSEHOLDS.values() for b, *_ in ms}
    newcomer = next(b for b in population.valid_bsns(200) if b not in used)
    fewer = {first_id: members, "H99": [(newcomer, "1980-01-01", "head")]}  # one moved in
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(population, "HOUSEHOLDS", fewer)
        mp.setattr(population, "REFERENCE_DATE", "2025-02-01")
        population.write_population(tmp_path / "later")
    make_links(tmp_path / "later" / "brp" / "2025-02-01", ring, out, DEFAULT_DOMAIN)
    make_links(tmp_path / "later" / "brp" / "2025-02-01", ring, out, DEFAULT_DOMAIN)  # twice
    again = pq.read_table(link_path(out, "b1", "b2"))
    domain = ring.active("domain", DEFAULT_DOMAIN)
    old, new = (TwoLayerPseudonymiser(ring.by_id(b), domain) for b in ("b1", "b2"))
    added = {"old_pid": old.one("household_id", "H99"), "new_pid": new.one("household_id", "H99")}
    assert sorted(again.to_pylist(), key=str) == sorted([*first.to_pylist(), added], key=str)
    made_from = json.loads(again.schema.metadata[b"made_from"])
    # Each delivery once, however often linked; each making on record.
    assert [m["reference_date"] for m in made_from] == [population.REFERENCE_DATE, "2025-02-01"]
    _, total = select(out / "audit-log", Filters(operation="pseudonym_link"))
    assert total == len(population.HOUSEHOLDS) + 2 * len(fewer)


def test_history_is_relinked_by_the_body_key_of_the_run_it_came_from(
    controller, tmp_path, passphrase
):
    """Runs are found by the id their rows carry (a renamed folder too); a household the
    table lacks keeps its pseudonym and is counted."""
    import json

    import pyarrow as pa

    from privacy.body_links import relink, run_body_keys

    path, brp = controller
    ring = load_keyring(path, passphrase)
    out = _runs_folder(tmp_path / "runs", ring)
    for folder, run_id, body in (("renamed-r1", "r1", "b1"), ("r2", "r2", "b2")):
        (out / folder).mkdir()
        manifest = {"run_id": run_id, "inputs": {"brp": {"pseudonym_key_id": body}}}
        (out / folder / "manifest.json").write_text(json.dumps(manifest))
    staging = out / ".staging-2025-02-01-interrupted"  # an unfinished run: not history
    (staging / "households").mkdir(parents=True)
    (staging / "manifest.json").write_text('{"run_id": "2025-02-01-interr')  # cut short
    assert run_body_keys(out) == {"r1": "b1", "r2": "b2"}
    make_links(brp, ring, out, DEFAULT_DOMAIN)
    domain = ring.active("domain", DEFAULT_DOMAIN)
    old, new = (TwoLayerPseudonymiser(ring.by_id(b), domain) for b in ("b1", "b2"))
    hh = sorted(population.HOUSEHOLDS)[0]
    gone = old.one("household_id", "a household not in the BRP")
    pids = pa.array([old.one("household_id", hh), gone, new.one("household_id", hh)])
    bodies = pa.array(["b1", "b1", "b2"])
    got, used, unlinked = relink(pids, bodies, "b2", out, ring, DEFAULT_DOMAIN)
    assert got.to_pylist() == [new.one("household_id", hh), gone, new.one("household_id", hh)]
    assert used == ["b1->b2"] and unlinked == {gone}


def test_a_table_made_with_another_new_body_key_than_the_bodies_is_refused_by_the_run(
    controller, tmp_path, passphrase
):
    """A controller keyring rotated on its own holds the bodies' b1 but another b2: the
    table's b1 side checks out, its b2 side links to pseudonyms no delivery carries. The
    table records both keys' fingerprints, and the run compares them with its deliveries'.
    Linking again with the right keyring replaces such a table rather than merging it."""
    import copy

    import pyarrow as pa

    from privacy.body_links import LinkMissing, relink, table_keys
    from privacy.retention import RETENTION_FILE

    path, brp = controller
    ring = load_keyring(path, passphrase)
    out = _runs_folder(tmp_path / "runs", ring)
    wrong = copy.deepcopy(ring)
    wrong.keys = [k for k in wrong.keys if k.id != "b2"]
    wrong.add("body")  # another b2
    assert wrong.by_id("b2").fingerprint != ring.by_id("b2").fingerprint
    make_links(brp, wrong, out, DEFAULT_DOMAIN)
    table = link_path(out, "b1", "b2")
    assert table_keys(table)["new"] == {"id": "b2", "fingerprint": wrong.by_id("b2").fingerprint}
    pids, bodies = pa.array(["d1." + "a" * 32]), pa.array(["b1"])
    with pytest.raises(LinkMissing, match="the controller keyring it was made with is not"):
        relink(pids, bodies, "b2", out, ring, DEFAULT_DOMAIN, ring.by_id("b2").fingerprint)
    make_links(brp, ring, out, DEFAULT_DOMAIN)  # the right keyring: the table is made anew
    assert table_keys(table)["new"]["fingerprint"] == ring.by_id("b2").fingerprint
    domain = ring.active("domain", DEFAULT_DOMAIN)
    right = TwoLayerPseudonymiser(ring.by_id("b2"), domain)
    assert sorted(pq.read_table(table)["new_pid"].to_pylist()) == sorted(
        right.one("household_id", hh) for hh in population.HOUSEHOLDS
    )
    # A run made with another b1 whose data was destroyed links nothing: no refusal for it.
    made = {"pseudonym_key_id": "b1", "pseudonym_key_fingerprint": "not-b1s"}
    (out / "r0").mkdir()
    (out / "r0" / "manifest.json").write_text(json.dumps({"run_id": "r0", "inputs": {"brp": made}}))
    (out / "r0" / RETENTION_FILE).write_text("{}")
    make_links(brp, ring, out, DEFAULT_DOMAIN)


def test_retention_removes_a_link_table_once_no_kept_run_or_feedback_needs_it(
    controller, tmp_path, passphrase, capsys
):
    """The table is pseudonymised data of every household: kept while a run whose data is
    kept, or feedback left, was made with the old body key; then removed, logged first."""
    from flows.feedback import store
    from pipelines.lifecycle import FEEDBACK_SCHEMA
    from privacy.audit.log import AuditLog
    from privacy.retention import KEY_STORE, protect_run

    path, brp = controller
    ring = load_keyring(path, passphrase)
    out = _runs_folder(tmp_path / "runs", ring)
    protect_run(out / "r1", "r1", ring, out / KEY_STORE)  # r1's data key, made a year ago
    key = out / KEY_STORE / "r1.key"
    key.write_text(json.dumps(json.loads(key.read_text()) | {"created": "2024-01-02T00:00:00"}))
    make_links(brp, ring, out, DEFAULT_DOMAIN)
    table = link_path(out, "b1", "b2")
    new_pids = set(pq.read_table(table)["new_pid"].to_pylist())
    row = {"signal_id": "s.aa", "scheme": "zorgtoeslag", "outcome": "contacted"}
    row |= {"outcome_date": __import__("datetime").date(2025, 3, 1), "run_id": "r1"}
    row |= {"household_pid": "d1." + "a" * 32, "benefit_year": 2025, "import_id": "f" * 64}
    store(pa.Table.from_pylist([row | {"row_number": 1}], schema=FEEDBACK_SCHEMA), out)
    argv = ["retention", "enforce", "--runs", str(out), "--period", "P1Y", "--key-file"]
    argv += [str(path), "--as-of"]

    assert main(argv + ["2025-06-01"]) == 0  # r1 destroyed, but feedback on it is left
    assert "1 run(s) past retention" in capsys.readouterr().out
    assert table.is_file()
    assert main(["retention", "status", "--runs", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "r1  personal data destroyed" in printed and "links/" not in printed
    assert main(argv + ["2026-04-01"]) == 0  # the feedback's period ended too
    printed = capsys.readouterr().out
    assert f"links/{table.name}: removed, no run or feedback kept was made with" in printed
    assert not table.exists() and list((out / "links").iterdir()) == []
    log = AuditLog(out / "audit-log")
    (deleted,) = [c for c in log.checkpoints() if c.batch_id.startswith(f"retention/{table.stem}")]
    records = log.batch_records(deleted.batch_id)
    assert set(records["data_subject_pid"].to_pylist()) == new_pids
    assert records.num_rows == len(population.HOUSEHOLDS)
    assert {json.loads(a)["dataset"] for a in records["attributes"].to_pylist()} == {
        "body-key-link-table"
    }
    checkpoints = len(log.checkpoints())
    assert main(argv + ["2026-04-01"]) == 0
    assert len(AuditLog(out / "audit-log").checkpoints()) == checkpoints
