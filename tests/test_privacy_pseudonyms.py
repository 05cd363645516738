"""Two-layer pseudonyms: body layer (HMAC) and purpose-domain layer (AES), with rotation."""

from __future__ import annotations

import pickle
import random
import re

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from population import B

from privacy.keys import Keyring, KeyringError
from privacy.pseudonyms import (
    BODY_PSEUDONYM_PATTERN,
    DomainPseudonymiser,
    Pseudonymiser,
    TwoLayerPseudonymiser,
    _key_from_file,
    translate,
)

BSNS = B[:20]


@pytest.fixture
def ring():
    ring = Keyring()
    ring.add("body")
    ring.add("domain", "signalling")
    ring.add("domain", "research")
    return ring


def test_the_same_bsn_gets_the_same_pseudonym_within_a_domain(ring):
    a = TwoLayerPseudonymiser(ring.active("body"), ring.active("domain", "signalling"))
    again = TwoLayerPseudonymiser(ring.active("body"), ring.active("domain", "signalling"))
    assert a.one("bsn", B[0]) == again.one("bsn", B[0])
    assert a.array("bsn", pa.array(BSNS)).to_pylist() == [a.one("bsn", b) for b in BSNS]
    assert a.one("bsn", B[0]).startswith("d1.")


def test_pseudonyms_differ_across_domains_and_share_no_value(ring):
    body = ring.active("body")
    signalling = TwoLayerPseudonymiser(body, ring.active("domain", "signalling"))
    research = TwoLayerPseudonymiser(body, ring.active("domain", "research"))
    one = set(signalling.array("bsn", pa.array(BSNS)).to_pylist())
    other = set(research.array("bsn", pa.array(BSNS)).to_pylist())
    assert one.isdisjoint(other)
    # Not even the letters after the key id coincide: the two cannot be matched by suffix.
    assert {p[3:] for p in one}.isdisjoint({p[3:] for p in other})


def test_pseudonyms_differ_across_body_keys_in_the_same_domain(ring):
    domain = ring.active("domain", "signalling")
    other_body = Keyring().add("body")  # another custodian's key, also called b1
    a = TwoLayerPseudonymiser(ring.active("body"), domain).array("bsn", pa.array(BSNS))
    b = TwoLayerPseudonymiser(other_body, domain).array("bsn", pa.array(BSNS))
    assert set(a.to_pylist()).isdisjoint(b.to_pylist())


def test_a_body_cannot_find_its_records_in_domain_pseudonyms_without_the_domain_key(ring):
    body = Pseudonymiser(ring.active("body"))
    extract = body.array("bsn", pa.array(BSNS))  # what the body delivered (and can recompute)
    central = DomainPseudonymiser(ring.active("domain", "signalling")).array(extract)
    assert set(extract.to_pylist()).isdisjoint(central.to_pylist())
    assert {p[3:] for p in extract.to_pylist()}.isdisjoint(p[3:] for p in central.to_pylist())
    # With the domain key as well (the controller's keys) the join is exact.
    controller = TwoLayerPseudonymiser(ring.active("body"), ring.active("domain", "signalling"))
    assert controller.array("bsn", pa.array(BSNS)) == central


@pytest.mark.parametrize(
    "value",
    [
        B[0],
        "d1.abcdefghijklmnopabcdefghijklmnop",
        "b1.short",
        "b1.ABCDEFGHIJKLMNOPABCDEFGHIJKLMNOP",
    ],
)
def test_the_domain_layer_accepts_only_body_pseudonyms(ring, value):
    domain = DomainPseudonymiser(ring.active("domain", "signalling"))
    with pytest.raises(TypeError, match="only body pseudonyms"):
        domain.array(pa.array([value, None]))


def test_keys_of_the_wrong_role_are_refused(ring):
    with pytest.raises(KeyringError, match="needs a body key"):
        Pseudonymiser(ring.active("domain", "signalling"))
    with pytest.raises(KeyringError, match="needs a domain key"):
        DomainPseudonymiser(ring.active("body"))


def test_nulls_stay_null_and_sliced_arrays_work(ring):
    body = Pseudonymiser(ring.active("body"))
    domain = DomainPseudonymiser(ring.active("domain", "signalling"))
    layer1 = body.array("bsn", pa.array([B[0], None, B[1], B[0]]))
    values = layer1.to_pylist()
    assert values[1] is None
    assert all(re.match(BODY_PSEUDONYM_PATTERN, v) for v in values if v)
    out = domain.array(layer1)
    assert out[1].as_py() is None and out[0] == out[3]
    assert domain.array(layer1.slice(2, 2)).to_pylist() == out.slice(2, 2).to_pylist()
    assert domain.array(pa.array([None, None], pa.string())).to_pylist() == [None, None]


def test_malformed_values_are_named_and_never_passed_on(ring):
    # The central read's one check: what is not a body pseudonym comes back null and
    # marked, the rest is moved exactly as `array` moves it, and nulls are not malformed.
    body = Pseudonymiser(ring.active("body"))
    domain = DomainPseudonymiser(ring.active("domain", "signalling"))
    good = body.array("bsn", pa.array([B[0], B[1]])).to_pylist()
    values = pa.array([good[0], B[2], None, "d1." + "a" * 32, good[1], "b1.short"])
    out, malformed = domain.array_or_malformed(values)
    assert malformed.to_pylist() == [False, True, False, True, False, True]
    moved = domain.array(pa.array(good)).to_pylist()
    assert out.to_pylist() == [moved[0], None, None, None, moved[1], None]
    out, malformed = domain.array_or_malformed(pa.array(good))
    assert out.to_pylist() == moved and not any(malformed.to_pylist())
    empty, none = domain.array_or_malformed(pa.array([], pa.string()))
    assert len(empty) == 0 and len(none) == 0


def _mutants(good: str, count: int, seed: int = 7) -> list[str]:
    """`good` with one to three characters replaced, inserted or deleted, from characters
    that are near misses (letters past p, digits, capitals, a dot, non-ASCII, a newline)."""
    rnd, out = random.Random(seed), []
    for _ in range(count):
        chars = list(good)
        for _ in range(rnd.randint(1, 3)):
            at, char = rnd.randrange(len(chars)), rnd.choice("abpq.b019Béz\n １")
            op = rnd.random()
            if op < 0.4:
                chars[at] = char
            elif op < 0.7:
                chars.insert(at, char)
            else:
                del chars[at]
        out.append("".join(chars))
    return out


def test_the_body_pseudonym_check_is_the_pattern_byte_for_byte(ring):
    """The domain layer checks BODY_PSEUDONYM_PATTERN without a regular expression (a
    fixed head per key id, the letters in numpy): the same verdict as the expression."""
    good = Pseudonymiser(ring.active("body")).one("bsn", B[0])
    near = [
        "b12." + "p" * 32, "b." + "a" * 32, "b1" + "a" * 33, "B1." + "a" * 32,
        "b1." + "a" * 31 + "q", "b1." + "a" * 33, "xb1." + "a" * 32, "b1." + "a" * 31, "",
        "b1." + "a" * 31 + "é", "b1." + "a" * 32 + "\n", "b１." + "a" * 32, "d1." + "a" * 32,
        "b1.." + "a" * 32, "b1." + "A" * 32, B[1], "b0." + "a" * 32, None,
    ]  # fmt: skip
    values = pa.array([good, *near, *_mutants(good, 3000)], pa.string())
    expected = pc.match_substring_regex(values, BODY_PSEUDONYM_PATTERN)
    assert 100 < pc.sum(expected).as_py() < len(values) - 1000  # both kinds, many of each
    domain = DomainPseudonymiser(ring.active("domain", "signalling"))
    for sample in (values, values.slice(7, 500)):
        out, malformed = domain.array_or_malformed(sample)
        wanted = pc.match_substring_regex(sample, BODY_PSEUDONYM_PATTERN)
        assert malformed.to_pylist() == [v is False for v in wanted.to_pylist()]
        pairs = zip(sample.to_pylist(), wanted.to_pylist(), strict=True)
        assert out.to_pylist() == [domain.one(v) if ok else None for v, ok in pairs]


def test_the_domain_layer_pickles_for_beam_and_never_shows_its_key(ring):
    key = ring.active("domain", "signalling")
    domain = DomainPseudonymiser(key)
    copy = pickle.loads(pickle.dumps(domain))
    layer1 = Pseudonymiser(ring.active("body")).array("bsn", pa.array(BSNS))
    assert copy.array(layer1) == domain.array(layer1)
    assert key.material.hex() not in repr(domain) and "material" not in repr(domain)


def test_from_a_keyring_file_the_domain_layer_pickles_without_its_key(ring, tmp_path, monkeypatch):
    """What a cluster's worker receives names the keyring file, not the key; unpickled, it
    opens the file with the passphrase in its own environment and pseudonymises the same."""
    from apache_beam.internal import pickler

    from privacy.keys import save_keyring

    monkeypatch.setenv("SIGNALS_KEYRING_PASSPHRASE", "worker passphrase")
    save_keyring(ring, tmp_path / "central.keyring", "worker passphrase")
    key = ring.active("domain", "signalling")
    domain = DomainPseudonymiser.from_keyring_file(tmp_path / "central.keyring", ring, "signalling")
    shipped = pickle.dumps(domain)
    assert key.material not in shipped and pickler.loads(pickler.dumps(domain))._material is None
    layer1 = Pseudonymiser(ring.active("body")).array("bsn", pa.array(BSNS))
    expected = DomainPseudonymiser(key).array(layer1)
    assert pickle.loads(shipped).array(layer1) == expected

    # A keyring made again under the same path holds another d1: refused, not used.
    other = Keyring()
    other.add("domain", "signalling")
    save_keyring(other, tmp_path / "central.keyring", "worker passphrase")
    _key_from_file.cache_clear()  # a fresh worker process
    with pytest.raises(KeyringError, match="holds another key d1 .* than the run started with"):
        pickle.loads(shipped).array(layer1)

    monkeypatch.delenv("SIGNALS_KEYRING_PASSPHRASE")
    _key_from_file.cache_clear()
    with pytest.raises(KeyringError, match="every worker needs .*SIGNALS_KEYRING_PASSPHRASE"):
        pickle.loads(shipped).array(layer1)


def test_rotation_keeps_links_by_translating_old_pseudonyms_exactly(ring):
    body = ring.active("body")
    before = TwoLayerPseudonymiser(body, ring.active("domain", "signalling"))
    old_pids = before.array("bsn", pa.array(BSNS + [None]))
    old, new = ring.rotate("domain", "signalling")
    assert (old.id, new.id) == ("d1", "d3") and ring.by_id("d1").retired
    after = TwoLayerPseudonymiser(body, ring.active("domain", "signalling"))
    new_pids = after.array("bsn", pa.array(BSNS + [None]))
    assert set(old_pids.to_pylist()[:-1]).isdisjoint(new_pids.to_pylist())
    assert translate(old_pids, ring, "signalling") == new_pids
    # Already current pseudonyms pass through unchanged, mixed with old ones.
    mixed = pa.concat_arrays([old_pids.slice(0, 5), new_pids.slice(5)])
    assert translate(mixed, ring, "signalling") == new_pids
    # And back to the retired key (a subject access request looks under every key).
    assert translate(new_pids, ring, "signalling", to=ring.by_id("d1")) == old_pids
    with pytest.raises(KeyringError, match="not a key of domain 'signalling'"):
        translate(new_pids, ring, "signalling", to=ring.active("domain", "research"))


def test_translation_never_crosses_domains(ring):
    research = TwoLayerPseudonymiser(ring.active("body"), ring.active("domain", "research"))
    pids = research.array("bsn", pa.array(BSNS[:3]))
    with pytest.raises(KeyringError, match="not a key of domain 'signalling'"):
        translate(pids, ring, "signalling")
    with pytest.raises(TypeError, match="only domain pseudonyms"):
        translate(pa.array([B[0]]), ring, "signalling")


def test_the_central_read_moves_identifiers_to_the_domain_and_quarantines_the_rest(
    tmp_path, keyring
):
    """A real Beam pipeline: ReadDeliveries on a delivery where one row carries a raw BSN
    and one an already-domain pseudonym; only body pseudonyms pass, as domain ones."""
    import json

    import apache_beam as beam
    import pyarrow.parquet as pq
    from apache_beam.io.parquetio import WriteToParquetBatched
    from conftest import write_delivery

    from pipelines.contract import SOURCES
    from pipelines.options import pipeline_options
    from pipelines.read_deliveries import ReadDeliveries, open_pseudonymised, sha256_of
    from pipelines.validate import QUARANTINE_SCHEMA
    from privacy.minimise import pseudonymised_schema
    from privacy.pseudonymise import pseudonymise_delivery

    header = list(SOURCES["objections"].column_names)
    rows = [[b, "2024-05-01", "all"] for b in B[:3]]
    raw = write_delivery(tmp_path / "raw", "objections", header, rows)
    folder = pseudonymise_delivery(raw, keyring, tmp_path / "pseudo").directory
    data = folder / "data.parquet"
    table = pq.read_table(data)
    bsn = table.column("bsn").to_pylist()
    bsn[1], bsn[2] = B[1], "d1." + bsn[2][3:]  # a raw BSN, a domain-looking pseudonym
    pq.write_table(table.set_column(0, table.schema.field(0), pa.array(bsn)), data)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["sha256"] = sha256_of(data)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    delivery = open_pseudonymised(folder, "objections")
    domain_key = Keyring().add("domain", "signalling")

    with beam.Pipeline(options=pipeline_options()) as p:
        read = p | ReadDeliveries({"objections": delivery}, DomainPseudonymiser(domain_key))
        for tag, schema in (("objections", pseudonymised_schema(SOURCES["objections"])),
                            (ReadDeliveries.QUARANTINE, QUARANTINE_SCHEMA)):  # fmt: skip
            _ = (
                read[tag]
                | f"Table_{tag}" >> beam.Map(lambda b: pa.Table.from_batches([b]))
                | f"Write_{tag}" >> WriteToParquetBatched(str(tmp_path / tag / "part"), schema)
            )
    kept = pq.read_table(tmp_path / "objections").column("bsn").to_pylist()
    expected = DomainPseudonymiser(domain_key).one(bsn[0])
    assert kept == [expected]
    quarantined = pq.read_table(tmp_path / ReadDeliveries.QUARANTINE).to_pylist()
    assert sorted(q["row_number"] for q in quarantined) == [2, 3]
    assert {q["cause"] for q in quarantined} == {"bsn: not a pseudonym"}
    assert B[1] not in json.dumps(quarantined)
