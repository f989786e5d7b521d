"""Password hashing (argon2) and API keys (random, shown once, stored as a SHA-256 hash)."""

from __future__ import annotations

import hashlib
import secrets
from functools import cached_property

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from argon2.profiles import CHEAPEST

from conveyor.settings import Settings

API_KEY_PREFIX = "API-"
MIN_PASSWORD = 10
FAST_HASHING_REFUSED = (
    "CONVEYOR_INSECURE_FAST_PASSWORD_HASHING is for the test suite only: unset it to start a "
    "server, whose password hashes would otherwise be cheap to crack."
)


class Passwords:
    """Hashes and checks passwords with the parameters chosen at bootstrap."""

    def __init__(self, hasher: PasswordHasher) -> None:
        self._hasher = hasher

    @classmethod
    def for_settings(cls, settings: Settings) -> Passwords:
        # Argon2's recommended parameters; the test suite (and only it) asks for the cheapest
        # profile, so that hundreds of throwaway users do not cost a second each.
        if settings.insecure_fast_password_hashing:
            return cls(PasswordHasher.from_parameters(CHEAPEST))
        return cls(PasswordHasher())

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    @cached_property
    def _decoy(self) -> str:
        return self._hasher.hash("decoy password that matches nothing")

    def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches. Without a hash (no such user, no password) a decoy is
        checked instead, so that every failure takes as long and no username is revealed."""
        try:
            return self._hasher.verify(password_hash or self._decoy, password) and bool(
                password_hash
            )
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_hex(20).upper()


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.strip().encode()).hexdigest()


def new_password() -> str:
    return secrets.token_urlsafe(12)
