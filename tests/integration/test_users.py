from __future__ import annotations

import datetime as dt

import pytest

from selfpay.adapters.passwords import Argon2Hasher
from selfpay.domain.ledger_errors import InvalidUsername, UnknownRole, UsernameTaken, WeakPassword
from selfpay.services import audit, users

NOW = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def hasher():
    return Argon2Hasher(time_cost=1, memory_cost=1024, parallelism=1)


def test_argon2_hasher_never_raises_for_a_wrong_password_or_bad_hash(hasher):
    h = hasher.hash("correct horse")
    assert h.startswith("$argon2id$")
    assert hasher.verify(h, "correct horse")
    assert not hasher.verify(h, "wrong horse")
    assert not hasher.verify("not a hash", "x")
    assert not hasher.verify("", "x")
    assert not hasher.needs_rehash(h)
    assert Argon2Hasher().needs_rehash(h)  # weaker parameters than the defaults


def test_create_and_authenticate(uow_factory, hasher):
    user = users.create_user(uow_factory(), hasher, username=" Alice ", password="s3cret-pw",
                             role="admin", now=NOW)
    assert user.id is not None and user.username == "alice"
    assert users.authenticate(uow_factory(), hasher, "ALICE", "s3cret-pw").id == user.id
    assert users.authenticate(uow_factory(), hasher, "alice", "wrong-pw!") is None
    assert users.authenticate(uow_factory(), hasher, "nobody", "s3cret-pw") is None
    assert users.authenticate(uow_factory(), hasher, "bad name!", "s3cret-pw") is None
    with pytest.raises(UsernameTaken):
        users.create_user(uow_factory(), hasher, username="alice", password="another-pw",
                          role="operator", now=NOW)


@pytest.mark.parametrize(
    ("kw", "error"),
    [({"password": "short"}, WeakPassword), ({"role": "root"}, UnknownRole),
     ({"username": "a b"}, InvalidUsername), ({"username": ""}, InvalidUsername)],
)
def test_create_user_validates(uow_factory, hasher, kw, error):
    args = {"username": "bob", "password": "long enough", "role": "operator", **kw}
    with pytest.raises(error):
        users.create_user(uow_factory(), hasher, now=NOW, **args)
    with uow_factory() as uow:
        assert uow.users.list() == []


def test_inactive_users_cannot_log_in_and_old_hashes_are_upgraded(uow_factory, hasher):
    users.create_user(uow_factory(), hasher, username="carol", password="password-1",
                      role="auditor", now=NOW)
    stronger = Argon2Hasher(time_cost=2, memory_cost=2048, parallelism=1)
    assert users.authenticate(uow_factory(), stronger, "carol", "password-1") is not None
    with uow_factory() as uow:
        user = uow.users.get("carol")
        assert not stronger.needs_rehash(user.password_hash)
        user.active = False
        uow.users.update(user)
        uow.commit()
    assert users.authenticate(uow_factory(), stronger, "carol", "password-1") is None


def test_audit_record_writes_in_the_callers_transaction(uow_factory):
    with uow_factory() as uow:
        audit.record(uow, actor="alice", action="user.login", ip="10.0.0.1", now=NOW)
    with uow_factory() as uow:
        assert uow.audit.list().total == 0
        entry = audit.record(uow, actor="alice", action="qr.make", target="ELEC/001",
                             detail={"n": 1}, now=NOW)
        uow.commit()
    with uow_factory() as uow:
        assert uow.audit.list().items == [entry]


def test_demo_admin_is_created_then_reset(uow_factory, hasher):
    first = users.set_demo_admin(uow_factory(), hasher, username="admin", password="pw-one-111",
                                 now=NOW)
    with uow_factory() as uow:  # the caller may hold the unit of work open itself
        second = users.set_demo_admin(uow, hasher, username="admin", password="pw-two-222",
                                      now=NOW)
        uow.commit()
    assert first.id == second.id
    assert users.authenticate(uow_factory(), hasher, "admin", "pw-one-111") is None
    assert users.authenticate(uow_factory(), hasher, "admin", "pw-two-222").role == "admin"
