"""Password hashing (argon2) and API keys (random, shown once, stored as a SHA-256 hash)."""

from __future__ import annotations

import hashlib
import os
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from argon2.profiles import CHEAPEST

# Argon2's recommended parameters. The test suite (and only it) turns on the cheapest profile,
# so that hundreds of throwaway users do not cost a second each.
_FAST = os.environ.get("CONVEYOR_INSECURE_FAST_PASSWORD_HASHING") == "1"
_hasher = PasswordHasher.from_parameters(CHEAPEST) if _FAST else PasswordHasher()
API_KEY_PREFIX = "API-"
MIN_PASSWORD = 10


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    if not password_hash:
        return False
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_hex(20).upper()


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.strip().encode()).hexdigest()


def new_password() -> str:
    return secrets.token_urlsafe(12)
