"""Encryption at rest for sensitive values, with a master key kept outside the database."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from conveyor.domain.errors import ConveyorError
from conveyor.settings import Settings

KEY_FILE = "master.key"


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    def encrypt(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode()

    def decrypt(self, cipher: str) -> str:
        try:
            return self._fernet.decrypt(cipher.encode()).decode()
        except InvalidToken as exc:
            raise ConveyorError(
                "a sensitive value cannot be decrypted with this master key: "
                "set CONVEYOR_MASTER_KEY (or the data folder's master.key) to the key "
                "it was saved with"
            ) from exc


def load_or_create_key(settings: Settings) -> bytes:
    """CONVEYOR_MASTER_KEY wins; otherwise the key file in the data folder, created 0600."""
    if settings.master_key:
        key = settings.master_key.encode()
        Fernet(key)  # refuse a malformed key at start-up, not at first use
        return key
    path = Path(settings.data_dir) / KEY_FILE
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key
