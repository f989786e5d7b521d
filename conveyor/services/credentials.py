"""Password hashing (argon2) and API keys (random, shown once, stored as a SHA-256 hash)."""

from __future__ import annotations

import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()
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
