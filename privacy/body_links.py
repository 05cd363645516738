"""The link table that keeps households' history across a body-key rotation (controller-made).

Layer 1 is one-way: after the key custodian rotates the body key (b1 -> b2), a household's
pseudonyms made with b2 do not link to those made with b1, and nobody can re-key one into
the other without the identifiers themselves. The next central run would then see every
household as new: fatigue would let households be contacted again too early, and every
open signal episode would be closed as `not_in_run`. The central run refuses that
(`flows/run.py` load_history): it asks for this table.

Only the controller can make it. It holds both body keys, the domain keys and the raw
BRP delivery (as for the worklist). For every household of that delivery:

    old_pid = d(b1(household_id))     new_pid = d(b2(household_id))

under the domain's active key, written to `<out>/links/households-b1-to-b2.parquet`
(owner-only), one table per retired body key, beside the runs and the operator feedback
the central run reads. Households only: the history compares households, nothing else,
so no table of persons or addresses is made (minimisation). A household of the old runs
that is not in the delivery stays unlinked: it is not in the new run either, which is
what its resolution (`not_in_run`) then says.

Making the table is processing of every household of the BRP: one `pseudonym_link`
record per household (subject: its new pseudonym) goes to the audit log first, batch
`pseudonym-link/<event>`, a trace of its own.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.audit_records import AuditContext, audit_batch, canonical_json
from pipelines.read_deliveries import open_delivery, validate_delivery
from privacy.audit.events import actor, append_events, new_event_id
from privacy.audit.log import LOG_DIRNAME, Checkpoint
from privacy.audit.signing import Signer
from privacy.files import written_whole
from privacy.keys import DEFAULT_DOMAIN, Keyring, KeyringError, check_custody
from privacy.pseudonyms import TwoLayerPseudonymiser, translate
from privacy.register import load_register
from privacy.retention import KEY_STORE

LINKS_DIR = "links"
LINK_SCHEMA = pa.schema(
    [
        pa.field("old_pid", pa.string(), nullable=False),
        pa.field("new_pid", pa.string(), nullable=False),
    ]
)
OPERATION = "pseudonym_link"
_MADE_FROM = "made_from"  # the table's Parquet metadata: the BRP deliveries it was made from
_KEYS = "body_keys"  # and the two body keys (id, fingerprint) it links
PURPOSE = "household history across a body-key rotation"


class LinkError(Exception):
    """The link table cannot be made as asked; the message says why."""


class LinkMissing(Exception):
    """History made with another body key and no link table for it; the message says how."""


def link_path(out_root: Path, old_key: str, new_key: str) -> Path:
    return Path(out_root) / LINKS_DIR / f"households-{old_key}-to-{new_key}.parquet"


@dataclass(frozen=True)
class Links:
    tables: list[Path]
    households: int  # in the BRP delivery (each table also keeps earlier deliveries' rows)
    checkpoint: Checkpoint
    covered: dict[str, str]  # old key -> how many of its last run's households it links


def _household_ids(brp_dir: Path) -> tuple[pa.Array, dict]:
    """The distinct household ids of the valid rows of a raw BRP delivery, and what
    delivery it was (reference date, checksum)."""
    delivery = open_delivery(Path(brp_dir), "brp")
    if "pseudonymised" in delivery.manifest:
        raise LinkError(
            f"{brp_dir}: a pseudonymised delivery; the link is made from the raw BRP "
            "delivery the municipality supplied (as for the worklist)"
        )
    chunks: list[pa.Array] = []
    validate_delivery(
        delivery,
        on_valid=lambda b: chunks.append(b.column("household_id")),
        on_quarantine=lambda b: None,
    )
    ids = pc.unique(pa.chunked_array(chunks, pa.string()).combine_chunks())
    made_from = {"reference_date": delivery.reference_date, "sha256": delivery.manifest["sha256"]}
    return ids.filter(pc.is_valid(ids)), made_from


def table_keys(path: Path) -> dict:
    """The body keys a link table was made with: {"old": {id, fingerprint}, "new": {...}}
    (empty for a table from before they were recorded)."""
    return json.loads((pq.read_metadata(path).metadata or {}).get(_KEYS.encode(), b"{}"))


def _merged(
    path: Path, table: pa.Table, keyring: Keyring, domain: str, keys: dict
) -> tuple[pa.Table, list]:
    """`table` with the rows of an earlier table at `path` it does not hold, all under the
    domain's active key, and every BRP delivery the result was made from. A household of
    an earlier BRP that this one lacks stays linked; the newer pair wins. A table made
    with other keys (a controller keyring since rebuilt) is replaced, not merged."""
    if not path.is_file() or table_keys(path) != keys:
        return table, []
    before = pq.read_table(path, schema=LINK_SCHEMA)
    sources = json.loads((pq.read_metadata(path).metadata or {}).get(_MADE_FROM.encode(), b"[]"))
    before = pa.table(
        [translate(before.column(n).combine_chunks(), keyring, domain) for n in LINK_SCHEMA.names],
        schema=LINK_SCHEMA,
    )
    kept = before.filter(pc.invert(pc.is_in(before["old_pid"], value_set=table["old_pid"])))
    return pa.concat_tables([table, kept]), sources


def make_links(
    brp_dir: Path,
    keyring: Keyring,
    out_root: Path,
    domain: str,
    key_store: Path | None = None,
    force: bool = False,
) -> Links:
    """Write one link table per retired body key of `keyring` to its active one; log first.

    Each must link most households of the last run made with its old key (read with the
    run-data keys in `key_store`, default `<out_root>/.keys`), unless `force`."""
    check_custody(keyring, "controller")
    new = keyring.active("body")
    retired = [k for k in keyring.keys if k.role == "body" and k is not new]
    if not retired:
        raise KeyringError(
            f"the keyring holds one body key ({new.id}): there is no rotation to link; rebuild "
            "the controller keyring from the rotated body keyring (keys init --import)"
        )
    log_root = Path(out_root) / LOG_DIRNAME
    if (Path(out_root) / "checkpoints").is_dir():
        raise LinkError(f"{out_root}: the audit log; give the runs folder it is in")
    if not (log_root / "checkpoints").is_dir():
        raise LinkError(
            f"{out_root}: no audit log there, so no central run to link: give the folder the "
            "central runs write to (their `--out`)"
        )
    made_with = set(run_body_keys(out_root).values())
    retired = [k for k in retired if k.id in made_with]
    for key in retired:
        _check_fingerprint(out_root, key)
    if not retired:
        raise LinkError(
            f"{out_root}: no kept run there was made with a retired body key "
            f"({', '.join(sorted(made_with)) or 'no run at all'}): there is no history to link"
        )
    households, made_from = _household_ids(brp_dir)
    if not len(households):
        raise LinkError(f"{brp_dir}: the BRP delivery holds no valid household to link")
    domain_key = keyring.active("domain", domain)
    new_pids = TwoLayerPseudonymiser(new, domain_key).array("household_id", households)
    tables, covered = {}, {}
    for old in retired:
        path = link_path(out_root, old.id, new.id)
        pairs = pa.table(
            [TwoLayerPseudonymiser(old, domain_key).array("household_id", households), new_pids],
            schema=LINK_SCHEMA,
        )
        store = key_store or Path(out_root) / KEY_STORE
        if force:
            covered[old.id] = "not checked (--force)"
        else:
            covered[old.id] = _check_coverage(pairs, out_root, old.id, keyring, domain, store)
        keys = {
            "old": {"id": old.id, "fingerprint": old.fingerprint},
            "new": {"id": new.id, "fingerprint": new.fingerprint},
        }
        pairs, sources = _merged(path, pairs, keyring, domain, keys)
        made = [m for m in sources if m.get("sha256") != made_from["sha256"]] + [made_from]
        metadata = {
            _MADE_FROM: json.dumps(made),
            _KEYS: json.dumps(keys),
            "domain_key": domain_key.id,
        }
        tables[path] = pairs.replace_schema_metadata(metadata)
    event = new_event_id()
    attributes = canonical_json(
        {
            "purpose": PURPOSE,
            "actor": actor(),
            "event": event,
            "links": [f"{old.id}->{new.id}" for old in retired],
            "brp": made_from,
            "covered": covered,
        }
    )
    context = AuditContext(f"pseudonym-link/{event}", domain, load_register().version)
    records = pa.Table.from_batches(
        [audit_batch(context, OPERATION, new_pids, "linked", attributes)]
    )
    checkpoint = append_events(log_root, records, f"pseudonym-link/{event}", Signer(keyring))
    for path, table in tables.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        with written_whole(path, private=True) as tmp:
            pq.write_table(table, tmp)
    return Links(sorted(tables), len(households), checkpoint, covered)


def relink(
    pids: pa.Array,
    body_keys: pa.Array,
    current: str,
    out_root: Path,
    keyring: Keyring,
    domain: str,
    fingerprint: str | None = None,
) -> tuple[pa.Array, list[str], set[str]]:
    """Household pseudonyms (under the domain's active key) made with other body keys, as the
    current body key makes them; `body_keys` names each one's. Returns them, the links
    used (`b1->b2`) and the households the link tables did not hold: they keep their
    pseudonym (not in the BRP the table was made from)."""
    used, unlinked = [], set()
    for old in sorted(set(pc.unique(body_keys).to_pylist()) - {current, None}):
        path = link_path(out_root, old, current)
        if not path.is_file():
            raise LinkMissing(
                f"kept runs in {out_root} were made with body key {old} and this run's "
                f"deliveries with {current}: their households link to this run only through "
                f"{path}, made by the controller after a body-key rotation (`signals keys link "
                f"--brp <this run's raw BRP delivery> --out {out_root} --key-file "
                "<controller keyring>`, docs/privacy.md). Without it fatigue and the signal "
                "lifecycle would take every household for new"
            )
        made_for = table_keys(path).get("new", {}).get("fingerprint")
        if fingerprint and made_for and made_for != fingerprint:
            raise LinkMissing(
                f"{path} links to body key {current} of fingerprint {made_for}, but this run's "
                f"deliveries were made with {current} of fingerprint {fingerprint}: the "
                "controller keyring it was made with is not the key custodian's. Rebuild the "
                "controller keyring from the custodian's body keyring and link again"
            )
        links = pq.read_table(path, schema=LINK_SCHEMA)
        try:
            old_pids = translate(links.column("old_pid").combine_chunks(), keyring, domain)
            new_pids = translate(links.column("new_pid").combine_chunks(), keyring, domain)
        except KeyringError as exc:
            raise LinkMissing(
                f"{path}: its households are named with a domain key the central keyring "
                f"cannot re-key from ({exc}); keep that key while the table is in use"
            ) from None
        mask = pc.fill_null(pc.equal(body_keys, old), False)
        found = pc.index_in(pids, value_set=old_pids)
        missing = pc.and_(mask, pc.is_null(found))
        unlinked |= set(pc.unique(pids.filter(missing)).to_pylist())
        pids = pc.if_else(mask, pc.coalesce(pc.take(new_pids, found), pids), pids)
        used.append(f"{old}->{current}")
    return pids, used, unlinked


# The BRP a link table is made from must hold most households of the last run made with
# the old key: monthly churn of households is a few percent. One that does not is another
# population's or another date's: used, it would make every household new. (An old key
# that is not the runs' is caught by its fingerprint here, a new key that is not the
# bodies' by the run, against its deliveries' fingerprint.)
LEAST_COVERED = 0.5
FEWEST_TO_JUDGE = 10  # households; fewer say nothing about a population


def published_manifests(out_root: Path) -> list[tuple[Path, dict]]:
    """(run folder, manifest) of the published runs in out_root: not the `.staging-…`
    folder of an unfinished run, whose manifest may be cut short and data key missing."""
    root = Path(out_root)
    found = []
    for path in sorted(root.glob("*/manifest.json")) if root.is_dir() else []:
        if not path.parent.name.startswith("."):
            found.append((path.parent, json.loads(path.read_text())))
    return found


def _brp(manifest: dict) -> dict:
    """What a run's manifest says of its BRP delivery: its body key id and fingerprint."""
    return manifest.get("inputs", {}).get("brp", {})


def _made_with_another(
    out_root: Path, key_id: str, fingerprint: str, before: str | None = None
) -> tuple[Path, str] | None:
    """(run folder, its key's fingerprint) of a published run whose personal data is kept,
    made with another key of the id `key_id` (runs from before fingerprints were recorded
    cannot say), or None. With `before`: only runs of an earlier reference date. A run
    whose data was destroyed links to nothing any more, so its key does not matter."""
    from privacy.retention import RETENTION_FILE

    for folder, manifest in published_manifests(out_root):
        if (folder / RETENTION_FILE).is_file():
            continue
        if before is not None and manifest.get("reference_date", "") >= before:
            continue
        made = _brp(manifest).get("pseudonym_key_fingerprint")
        if _brp(manifest).get("pseudonym_key_id") == key_id and made and made != fingerprint:
            return folder, made
    return None


def _check_fingerprint(out_root: Path, key) -> None:
    """The retired key must be the one the kept runs were made with, not another of its id."""
    found = _made_with_another(out_root, key.id, key.fingerprint)
    if found:
        raise LinkError(
            f"run {found[0].name} was made with body key {key.id} of fingerprint {found[1]}, "
            f"the controller keyring holds another ({key.fingerprint}): rebuild it from the "
            "key custodian's body keyring"
        )


def _latest_households(out_root: Path, body_id: str, keyring: Keyring, key_store) -> tuple:
    """(run id, household pseudonyms) of the latest kept run made with `body_id` whose
    personal data is kept, or (None, None)."""
    from privacy.retention import RETENTION_FILE, read_run_table

    runs = []
    for folder, manifest in published_manifests(out_root):
        made_with = _brp(manifest).get("pseudonym_key_id")
        if made_with == body_id and (folder / "households").is_dir():
            if not (folder / RETENTION_FILE).is_file():
                runs.append(
                    (manifest.get("reference_date", ""), manifest.get("created_at", ""), folder)
                )
    if not runs:
        return None, None
    *_, run_dir = max(runs)  # the latest date; of one date, the last made
    table = read_run_table(run_dir, "households", keyring, key_store, _household_column)
    return run_dir.name, table.column("household_pid").combine_chunks()


def _household_column(table: pa.Table) -> pa.Table:
    return table.select(["household_pid"])


def _check_coverage(pairs: pa.Table, out_root, old_id, keyring, domain, key_store) -> str:
    """How many of the last old-key run's households the table links; refuses too few."""
    run_id, latest = _latest_households(out_root, old_id, keyring, key_store)
    if latest is None:
        return "no kept run's households to compare with"
    latest = pc.unique(translate(latest.drop_null(), keyring, domain))
    found = pc.sum(pc.is_in(latest, value_set=pairs["old_pid"])).as_py() or 0
    said = f"{found:,} of the {len(latest):,} households of run {run_id}"
    if len(latest) >= FEWEST_TO_JUDGE and found < LEAST_COVERED * len(latest):
        raise LinkError(
            f"the BRP delivery links only {said}, the last run made with body key {old_id}: "
            "it is not this population's current BRP, or the body key is not the one the "
            "bodies use (rotate it only in the key custodian's body keyring and rebuild the "
            "controller keyring from it). Nothing written. If so many households really "
            "left, link anyway with --force"
        )
    return said


def run_body_keys(out_root: Path) -> dict[str, str]:
    """Run id -> the body key of its deliveries, for every run folder in out_root."""
    keys = {}
    for folder, manifest in published_manifests(out_root):
        if made_with := _brp(manifest).get("pseudonym_key_id"):
            keys[manifest.get("run_id") or folder.name] = made_with  # by the id rows carry
    return keys


def check_same_key(out_root: Path, key_id: str, fingerprint: str | None, before: str) -> None:
    """Refuse history (kept runs of a reference date before `before`, their data not
    destroyed) made with another key of the same id as this run's deliveries: a body
    keyring made again (not rotated) gives b1 again, and nothing would link."""
    found = _made_with_another(out_root, key_id, fingerprint, before) if fingerprint else None
    if found:
        raise LinkMissing(
            f"kept run {found[0].name} was made with body key {key_id} of fingerprint "
            f"{found[1]}, this run's deliveries with another key of that id ({fingerprint}): "
            "the body keyring was made again instead of rotated (signals keys rotate --role "
            "body), and no household would link. Restore the key custodian's body keyring, "
            f"or move the kept runs out of {out_root} to start without their history"
        )


_TABLE_NAME = re.compile(r"^households-(?P<old>.+)-to-(?P<new>.+)\.parquet$")


def unneeded_tables(out_root: Path) -> list[Path]:
    """The link tables in out_root that nothing kept needs any more: no published run whose
    personal data is kept was made with their old body key, and no operator feedback left
    is on such a run (the run reads both through the table; subject access follows it)."""
    from pipelines.lifecycle import FEEDBACK_SCHEMA, feedback_folder
    from privacy.retention import RETENTION_FILE

    folder = Path(out_root) / LINKS_DIR
    tables = sorted(folder.glob("households-*-to-*.parquet")) if folder.is_dir() else []
    if not tables:
        return []
    needed = {
        _brp(manifest).get("pseudonym_key_id")
        for run, manifest in published_manifests(out_root)
        if not (run / RETENTION_FILE).is_file()
    }
    feedback = sorted(feedback_folder(out_root).glob("*.parquet"))
    if feedback:
        made_with = run_body_keys(out_root)
        run_ids = pq.read_table(feedback, schema=FEEDBACK_SCHEMA, columns=["run_id"])["run_id"]
        needed |= {made_with.get(r) for r in pc.unique(run_ids).to_pylist()}
    return [t for t in tables if (m := _TABLE_NAME.match(t.name)) and m["old"] not in needed]


def link_domain(path: Path, keyring: Keyring) -> str:
    """The purpose domain a link table's pseudonyms are of: its domain key's, else the default."""
    key_id = (pq.read_metadata(path).metadata or {}).get(b"domain_key", b"").decode()
    for key in keyring.keys:
        if key.role == "domain" and key.id == key_id and key.domain:
            return key.domain
    return DEFAULT_DOMAIN
