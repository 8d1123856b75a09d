"""Staff users: create them and check their passwords."""

from __future__ import annotations

import datetime as dt
import re

from selfpay.domain.ledger_errors import InvalidUsername, UnknownRole, UsernameTaken, WeakPassword
from selfpay.services.ports import PasswordHasher, UnitOfWork, User

ROLES = ("admin", "operator", "auditor")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")
_DUMMY_PASSWORD = "selfpay-no-such-user"
_dummy_hashes: dict[type, str] = {}


def normalize_username(username: str) -> str:
    name = username.strip().lower()
    if not USERNAME_RE.match(name):
        raise InvalidUsername(key="err.user.name")
    return name


def create_user(
    uow: UnitOfWork,
    hasher: PasswordHasher,
    *,
    username: str,
    password: str,
    role: str,
    now: dt.datetime,
) -> User:
    name = normalize_username(username)
    if role not in ROLES:
        raise UnknownRole(key="err.user.role", value=str(role)[:32], known=list(ROLES))
    _check_password(password)
    password_hash = hasher.hash(password)
    with uow:
        if uow.users.get(name) is not None:
            raise UsernameTaken(key="err.user.taken", name=name)
        user = User(id=None, username=name, password_hash=password_hash, role=role,
                    active=True, created_at=now)
        user.id = uow.users.add(user)
        uow.commit()
    return user


def set_demo_admin(
    uow: UnitOfWork, hasher: PasswordHasher, *, username: str, password: str,
    now: dt.datetime,
) -> User:
    """Create the admin user, or give the existing one this password, the admin role
    and an active account (`selfpay demo` prints a new password on every start)."""
    name = normalize_username(username)
    _check_password(password)
    password_hash = hasher.hash(password)
    with uow:
        user = uow.users.get(name)
        if user is None:
            user = User(id=None, username=name, password_hash=password_hash, role="admin",
                        active=True, created_at=now)
            user.id = uow.users.add(user)
        else:
            user.password_hash, user.role, user.active = password_hash, "admin", True
            uow.users.update(user)
            uow.staff_sessions.end_all(name, now)  # a new password: old sign-ins end
        uow.commit()
    return user


def authenticate(
    uow: UnitOfWork, hasher: PasswordHasher, username: str, password: str
) -> User | None:
    """The user if the password is right and the account active, else None.

    A missing user still costs one hash verification, so the time taken does not tell
    which usernames exist. A hash made with old parameters is upgraded on success.
    """
    try:
        name = normalize_username(username)
    except InvalidUsername:
        name = ""
    with uow:
        user = uow.users.get(name) if name else None
        if user is None:
            hasher.verify(_dummy_hash(hasher), password)
            return None
        if not hasher.verify(user.password_hash, password) or not user.active:
            return None
        if hasher.needs_rehash(user.password_hash):
            user.password_hash = hasher.hash(password)
            uow.users.update(user)
            uow.commit()
    return user


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD or len(password) > MAX_PASSWORD:
        raise WeakPassword(key="err.user.password", min=MIN_PASSWORD, max=MAX_PASSWORD)


def _dummy_hash(hasher: PasswordHasher) -> str:
    kind = type(hasher)
    if kind not in _dummy_hashes:
        _dummy_hashes[kind] = hasher.hash(_DUMMY_PASSWORD)
    return _dummy_hashes[kind]
