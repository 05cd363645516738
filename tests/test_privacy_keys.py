"""Key custody and the `signals keys` commands: who may hold which key, and clean failures."""

from __future__ import annotations

import base64
import json

import pytest
from conftest import write_delivery
from population import B

from flows.cli import main
from pipelines.contract import SOURCES
from privacy.keys import (
    DEFAULT_DOMAIN,
    Keyring,
    KeyringError,
    central_keyring,
    check_custody,
    load_keyring,
    save_keyring,
)
from privacy.pseudonymise import pseudonymise_delivery


def _ring(*roles: str) -> Keyring:
    ring = Keyring()
    for role in roles:
        ring.add(role, DEFAULT_DOMAIN if role == "domain" else None)
    return ring


@pytest.mark.parametrize(
    "party, roles, problem",
    [
        ("body", ("body",), None),
        ("body", ("body", "domain"), "must not hold any domain"),
        ("body", ("domain",), "must not hold any domain"),
        ("central", ("domain", "run-data", "audit-signing"), None),
        ("central", ("body", "domain", "run-data"), "must not hold any body"),
        ("central", ("domain",), "holds no run-data key"),
        ("controller", ("body", "domain", "run-data", "audit-signing"), None),
        (
            "controller",
            ("domain", "run-data", "audit-signing"),
            "not a controller keyring \\(it holds no body key",
        ),
        ("controller", ("body", "run-data", "audit-signing"), "holds no domain key"),
    ],
)
def test_each_party_holds_exactly_the_keys_of_its_role(party, roles, problem):
    ring = _ring(*roles)
    if problem is None:
        check_custody(ring, party)
    else:
        with pytest.raises(KeyringError, match=problem):
            check_custody(ring, party)


def test_the_body_step_refuses_a_keyring_with_a_domain_key(tmp_path):
    header = list(SOURCES["objections"].column_names)
    raw = write_delivery(tmp_path / "raw", "objections", header, [[B[0], "2024-05-01", "all"]])
    with pytest.raises(KeyringError, match="must not hold any domain"):
        pseudonymise_delivery(raw, _ring("body", "domain", "run-data"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_central_run_needs_its_keyring_and_refuses_a_body_key(tmp_path, passphrase):
    with pytest.raises(KeyringError, match="needs the central keyring"):
        central_keyring(None, DEFAULT_DOMAIN)
    save_keyring(_ring("body", "domain", "run-data"), tmp_path / "k", passphrase)
    with pytest.raises(KeyringError, match="must not hold any body"):
        central_keyring(tmp_path / "k", DEFAULT_DOMAIN)
    save_keyring(_ring("domain", "run-data"), tmp_path / "k", passphrase)
    with pytest.raises(KeyringError, match="no active 'domain' key for domain 'other'"):
        central_keyring(tmp_path / "k", "other")


def test_key_ids_are_unique_across_domains_and_merging_refuses_a_clash():
    ring = Keyring()
    ids = [ring.add("domain", d).id for d in ("a", "b", "a")]
    assert ids == ["d1", "d2", "d3"]
    with pytest.raises(KeyringError, match="needs a purpose domain"):
        ring.add("domain")
    other = Keyring()
    other.add("domain", "a")  # also d1, other material
    with pytest.raises(KeyringError, match="share the id 'd1'"):
        ring.merge(other)
    assert ring.merge(ring) == []  # the same keys again: nothing added


def _material_strings(ring: Keyring) -> list[str]:
    out = []
    for k in ring.keys:
        out += [k.material.hex(), base64.b64encode(k.material).decode()]
    return out


def _three_keyrings(tmp_path):
    """Body, central and controller keyrings made with `signals keys init`."""
    body, central, controller = (tmp_path / f"{n}.keyring" for n in ("b", "c", "k"))
    assert main(["keys", "init", "--key-file", str(body)]) == 0
    assert main(["keys", "init", "--role", "central", "--key-file", str(central)]) == 0
    args = ["keys", "init", "--role", "controller", "--key-file", str(controller)]
    assert main(args + ["--import", str(body), "--import", str(central)]) == 0
    return body, central, controller


def test_keys_init_rotate_show_never_print_key_material(tmp_path, passphrase, capsys):
    body, central, controller = _three_keyrings(tmp_path)
    assert main(["keys", "rotate", "--role", "domain", "--key-file", str(central)]) == 0
    for path in (body, central, controller):
        assert main(["keys", "show", "--key-file", str(path)]) == 0
    out = capsys.readouterr().out
    rings = [load_keyring(p, passphrase) for p in (body, central, controller)]
    for secret in sum((_material_strings(r) for r in rings), []):
        assert secret not in out
        for path in (body, central, controller):
            assert secret not in path.read_text()
    ring = rings[1]
    assert [(k.id, k.role, k.retired) for k in ring.keys] == [
        ("d1", "domain", True),
        ("r1", "run-data", False),
        ("s1", "audit-signing", False),
        ("d2", "domain", False),
    ]
    assert f"fingerprint {ring.by_id('d2').fingerprint}" in out
    assert "d1     domain         retired" in out
    assert {k.id for k in rings[2].keys} == {"b1", "d1", "r1", "s1"}


def test_a_key_is_rotated_only_in_the_keyring_of_its_custodian(tmp_path, passphrase, capsys):
    """A body key rotated in a controller keyring would differ from the bodies' own."""
    body, central, controller = _three_keyrings(tmp_path)
    capsys.readouterr()
    for role, path, owner in (
        ("body", controller, "body"),
        ("domain", controller, "central"),
        ("domain", body, "central"),
        ("body", central, "body"),
    ):
        assert main(["keys", "rotate", "--role", role, "--key-file", str(path)]) == 2
        err = capsys.readouterr().err
        keeper = "the key custodian's body keyring" if owner == "body" else "the central keyring"
        assert f"a {role} key is rotated in {keeper}, which keeps it" in err, (role, path)
    before = load_keyring(controller, passphrase)
    assert [k.id for k in before.keys] == ["b1", "d1", "r1", "s1"]  # untouched


def _keyrings(tmp_path, passphrase) -> dict:
    body, central = _ring("body"), _ring("domain", "run-data", "audit-signing")
    paths = {"body": tmp_path / "body.keyring", "central": tmp_path / "central.keyring"}
    save_keyring(body, paths["body"], passphrase)
    save_keyring(central, paths["central"], passphrase)
    return paths


def _commands(tmp_path, paths) -> dict[str, list[str]]:
    header = list(SOURCES["objections"].column_names)
    raw = write_delivery(tmp_path / "raw", "objections", header, [[B[0], "2024-05-01", "all"]])
    out = tmp_path / "written"
    return {
        "pseudonymise": ["pseudonymise", "--delivery", str(raw), "--key-file", str(paths["body"]),
                         "--out", str(out)],
        "run": ["run", "--deliveries", str(tmp_path / "raw"), "--reference-date", "2025-01-01",
                "--out", str(out), "--key-file", str(paths["central"])],
        "worklist": ["worklist", "--run", str(tmp_path / "no-run"), "--brp", str(raw),
                     "--key-file", str(paths["central"]), "--out", str(out / "w.csv")],
        "keys rotate": ["keys", "rotate", "--role", "domain", "--key-file", str(paths["central"])],
    }  # fmt: skip


DAMAGES = ("wrong passphrase", "missing", "corrupted")


# `run` starts a Prefect flow (seconds each): one damage is enough to show the flow fails clean.
@pytest.mark.parametrize(
    "command, damage",
    [(c, d) for c in ("pseudonymise", "worklist", "keys rotate") for d in DAMAGES]
    + [("run", "wrong passphrase")],
)
def test_a_bad_keyring_is_a_clear_error_and_nothing_is_written(
    tmp_path, passphrase, capsys, monkeypatch, command, damage
):
    paths = _keyrings(tmp_path, passphrase)
    argv = _commands(tmp_path, paths)[command]
    key_file = paths["central"] if "central" in " ".join(argv) else paths["body"]
    if damage == "wrong passphrase":
        monkeypatch.setenv("SIGNALS_KEYRING_PASSPHRASE", "not the passphrase at all")
        expected = "wrong passphrase, or the file was altered"
    elif damage == "missing":
        key_file.unlink()
        expected = "keyring file not found"
    else:
        doc = json.loads(key_file.read_text())
        doc["ciphertext"] = doc["ciphertext"][:-8] + "AAAAAAA="
        key_file.write_text(json.dumps(doc))
        expected = "cannot decrypt the keyring"
    before = key_file.read_bytes() if key_file.exists() else None
    assert main(argv) == 2
    # The last line is the CLI's; a flow's failure is also logged by Prefect above it.
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: ") and expected in last and str(key_file) in last
    assert not (tmp_path / "written").exists()
    assert (key_file.read_bytes() if key_file.exists() else None) == before


def test_deliveries_of_two_body_keys_are_refused_by_id_or_by_fingerprint(tmp_path):
    """All bodies must pseudonymise with the custodian's one body key: two keys never join.
    A keyring made again reuses the id (b1), so the fingerprint tells them apart."""
    import population

    from pipelines.read_deliveries import DeliveryRefused, open_pseudonymised
    from privacy.pseudonymise import check_one_body_key

    population.write_population(tmp_path / "raw")
    one, again, rotated = _ring("body"), _ring("body"), _ring("body")
    rotated.rotate("body", None)
    found = {}
    for source, ring in (("brp", one), ("tax", one), ("health_insurance", again)):
        folder = tmp_path / "raw" / source / population.REFERENCE_DATE
        done = pseudonymise_delivery(folder, ring, tmp_path / "pseudo")
        found[source] = open_pseudonymised(done.directory, source)
    assert found["brp"].manifest["pseudonymised"]["key_fingerprint"] == one.by_id("b1").fingerprint
    assert check_one_body_key({n: found[n] for n in ("brp", "tax")}) == (
        "b1",
        one.by_id("b1").fingerprint,
    )
    with pytest.raises(DeliveryRefused, match="health_insurance: b1 \\(fingerprint"):
        check_one_body_key(found)
    folder = tmp_path / "raw" / "benefits" / population.REFERENCE_DATE
    done = pseudonymise_delivery(folder, rotated, tmp_path / "pseudo2")
    with pytest.raises(DeliveryRefused, match="benefits: b2"):
        check_one_body_key({"brp": found["brp"], "benefits": open_pseudonymised(done.directory)})
