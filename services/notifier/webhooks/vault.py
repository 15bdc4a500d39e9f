"""Signing secrets at rest: encrypted with the notifier's key, so a dump does not reveal them.

A signature needs the secret itself, so it cannot be stored as a hash (as API keys are).
Fernet (AES-128-CBC with HMAC-SHA256, from `cryptography`) encrypts it with
`TIERFLOW_WEBHOOK_SECRETS_KEY`; several comma-separated keys may be given, the first
encrypts and all decrypt, so the key itself can be rotated.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from shared.errors import TierflowError


class VaultError(TierflowError):
    """A stored secret cannot be decrypted with any configured key."""


def generate_key() -> str:
    """A new key for `TIERFLOW_WEBHOOK_SECRETS_KEY`."""
    return Fernet.generate_key().decode()


class Vault:
    """Encrypts and decrypts signing secrets."""

    def __init__(self, raw_keys: str) -> None:
        # Validated by the settings (`NotifierSettings.webhook_secrets_key`).
        keys = [Fernet(k.strip().encode()) for k in raw_keys.split(",") if k.strip()]
        self._fernet = MultiFernet(keys)

    def seal(self, secret: str) -> bytes:
        """The secret, encrypted with the first key."""
        return self._fernet.encrypt(secret.encode())

    def open(self, sealed: bytes) -> str:
        """The secret; VaultError if no configured key decrypts it."""
        try:
            return self._fernet.decrypt(sealed).decode()
        except InvalidToken:
            raise VaultError("a stored secret matches none of the configured keys") from None
