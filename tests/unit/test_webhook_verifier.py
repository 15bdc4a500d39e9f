"""The reference verifier printed in docs/webhooks.md, run as written, against our signer."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from services.notifier.webhooks.signing import SIGNATURE_HEADER, new_secret, signature_header

DOC = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"
BODY = b'{"id": "m-1", "type": "tier.changed", "sequence": 7}'
NOW = 1_795_148_101


def verifier_class() -> Any:
    """The `Verifier` from the block the doc marks as the reference verifier."""
    text = DOC.read_text(encoding="utf-8")
    block = re.search(r"<!-- verifier:[^>]*-->\s*```python\n(.*?)```", text, re.S)
    assert block, "docs/webhooks.md lost its reference verifier block"
    namespace: dict[str, Any] = {}
    exec(compile(block.group(1), str(DOC), "exec"), namespace)  # noqa: S102 - our own doc
    return namespace["Verifier"]


@pytest.fixture
def secret() -> str:
    return new_secret()


def signed(secret: str, *, t: int = NOW, body: bytes = BODY) -> dict[str, str]:
    return {SIGNATURE_HEADER: signature_header([secret], t, body)}


def test_accepts_a_genuine_delivery(secret: str) -> None:
    assert verifier_class()(secret).verify(signed(secret), BODY, now=NOW + 3)


def test_rejects_a_tampered_body(secret: str) -> None:
    tampered = BODY.replace(b"7", b"8")
    assert not verifier_class()(secret).verify(signed(secret), tampered, now=NOW)


def test_rejects_another_secret_and_a_missing_header(secret: str) -> None:
    verifier = verifier_class()(secret)
    assert not verifier.verify(signed(new_secret()), BODY, now=NOW)
    assert not verifier.verify({}, BODY, now=NOW)
    assert not verifier.verify({SIGNATURE_HEADER: "t=abc,v1=00"}, BODY, now=NOW)


@pytest.mark.parametrize("skew", [301, -301, 3600])
def test_rejects_a_stale_or_future_timestamp(secret: str, skew: int) -> None:
    assert not verifier_class()(secret).verify(signed(secret), BODY, now=NOW + skew)


def test_rejects_a_replay_but_accepts_a_genuine_retry(secret: str) -> None:
    verifier = verifier_class()(secret)
    assert verifier.verify(signed(secret), BODY, now=NOW)
    assert not verifier.verify(signed(secret), BODY, now=NOW + 10)  # the same request again
    assert verifier.verify(signed(secret, t=NOW + 5), BODY, now=NOW + 10)  # signed anew


def test_a_rotation_header_verifies_with_either_secret(secret: str) -> None:
    old = new_secret()
    header = {SIGNATURE_HEADER: signature_header([secret, old], NOW, BODY)}
    assert verifier_class()(secret).verify(header, BODY, now=NOW)
    assert verifier_class()(old).verify(header, BODY, now=NOW)
