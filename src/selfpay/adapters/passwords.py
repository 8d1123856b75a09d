"""Argon2id password hashing (argon2-cffi), implementing services.ports.PasswordHasher."""

from __future__ import annotations

from typing import Any

import argon2
from argon2.exceptions import InvalidHashError, VerificationError


class Argon2Hasher:
    def __init__(self, **params: Any) -> None:
        """`params` go to argon2.PasswordHasher (time_cost, memory_cost, ...); the
        defaults are argon2-cffi's RFC 9106 low-memory profile."""
        self._hasher = argon2.PasswordHasher(**params)

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        """False for a wrong password or a hash that is not argon2; never raises for them."""
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except (InvalidHashError, ValueError):
            return True
