"""Validation at the edge: the UID rule, spool paths, and every malformed instance refused with
its own status (never Success, never the internal catch-all). Includes bounded hypothesis fuzzing."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds.contracts.uids import InvalidUid, is_valid_uid, require_uid, uid_problem
from cds.intake.instance_check import InstanceProblem, inspect_instance
from cds.intake.spool_paths import place_new, spool_path
from tests.unit.intake.mutations import BAD_UIDS, Mutant, corpus, valid_file, write_mutant

KNOWN = {0xC000, 0xC001, 0xC002, 0xC003, 0xC004, 0xC006, 0xC007, 0xC008, 0xC009, 0xC00A, 0xA900}


@pytest.mark.parametrize("uid", ["1.2.3", "0", "0.0.1", "2.25.1234567890123456789", "1." + "1" * 62])
def test_valid_uids(uid):
    assert is_valid_uid(uid) and require_uid(uid, "X") == uid


@pytest.mark.parametrize("uid", [*BAD_UIDS, "", "1." + "1" * 63, "01.2", "1.2\n", None, 5, "１.2"])
def test_invalid_uids(uid):
    assert uid_problem(uid) is not None
    with pytest.raises(InvalidUid) as info:
        require_uid(uid, "StudyInstanceUID")
    assert str(uid) not in str(info.value) or uid in ("", None, 5)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=80))
def test_uid_rule_matches_definition(text):
    parts = text.split(".")
    expected = (0 < len(text) <= 64 and all(p.isascii() and p.isdigit() and (p == "0" or p[0] != "0")
                                              for p in parts))
    assert is_valid_uid(text) == expected
    if is_valid_uid(text):
        assert "/" not in text and ".." not in text


def test_spool_path_refuses_traversal(tmp_path):
    for bad in BAD_UIDS:
        with pytest.raises(InvalidUid):
            spool_path(tmp_path, bad, "1.2", "1.3")
        with pytest.raises(InvalidUid):
            spool_path(tmp_path, "1.2", "1.3", bad)
    assert spool_path(tmp_path, "1.2", "1.3", "1.4") == tmp_path / "1.2" / "1.3" / "1.4.dcm"


def test_place_new_never_replaces(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"first")
    dest = tmp_path / "s" / "x.dcm"
    assert place_new(a, dest)
    b.write_bytes(b"second")
    assert not place_new(b, dest)
    assert dest.read_bytes() == b"first" and b.exists()


def _check(m: Mutant, path: Path) -> int | None:
    write_mutant(m, path)
    try:
        inspect_instance(path, command_sop_class=m.sop_class, command_sop_instance=m.sop_uid)
    except InstanceProblem as problem:
        assert problem.reason
        return problem.status
    return None


def test_corpus_every_mutant_refused_with_specific_status(tmp_path):
    mutants = corpus()
    assert len(mutants) >= 100
    statuses = {m.name: _check(m, tmp_path / "m.dcm") for m in mutants}
    accepted = [n for n, s in statuses.items() if s is None]
    assert not accepted
    assert set(statuses.values()) <= KNOWN
    assert statuses["MG:native-under-jpeg"] == 0xC008
    assert statuses["MG:name-as-sequence"] == 0xC007
    assert statuses["MG:trailing-2GB-element"] == 0xC003
    assert statuses["US:Rows-zero"] == 0xC009
    assert all(s in (0xC006, 0xC007) for n, s in statuses.items() if "uid-bad" in n or "UID-bad" in n)


@pytest.mark.parametrize("kind", ["MG", "US"])
def test_valid_instances_pass(tmp_path, kind):
    m, path = valid_file(kind, tmp_path / "v.dcm")
    meta = inspect_instance(path, command_sop_class=m.sop_class, command_sop_instance=m.sop_uid)
    assert meta.sop_instance_uid == m.sop_uid


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), n_flips=st.integers(1, 12), cut=st.floats(0.0, 1.0))
def test_fuzz_byte_flips_never_crash(tmp_path, seed, n_flips, cut):
    """Random flips and cuts of a valid instance: a known status or a coherent accept, no crash."""
    rng = random.Random(seed)
    m, _ = valid_file(rng.choice(["MG", "US"]), tmp_path / "v.dcm", seed=seed % 3)
    body = bytearray(m.body)
    for _ in range(n_flips):
        body[rng.randrange(len(body))] = rng.getrandbits(8)
    m.body = bytes(body[: max(1, int(len(body) * cut))] if rng.random() < 0.3 else body)
    status = _check(m, tmp_path / "f.dcm")
    assert status is None or status in KNOWN


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2048))
def test_fuzz_random_bodies_refused(tmp_path, data):
    m, _ = valid_file("MG", tmp_path / "v.dcm")
    m.body = data
    assert _check(m, tmp_path / "r.dcm") in KNOWN
