"""docs/api-reference.md is what the OpenAPI documents say now."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import api_reference

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "api-reference.md"


def test_the_api_reference_is_generated_from_the_code(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TIERFLOW_GRADER_PORT", "TIERFLOW_MAX_BATCH_EVENTS"):
        monkeypatch.setenv(name, "9999")  # the reference ignores the shell's settings
    assert REFERENCE.read_text(encoding="utf-8") == api_reference.render(), (
        "docs/api-reference.md is stale: .venv/bin/python -m tests.api_reference "
        "> docs/api-reference.md")


def test_every_route_is_in_the_reference() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    for name, _, app in api_reference.apps():
        for path, item in app.openapi()["paths"].items():
            for method in item:
                assert f"### `{method.upper()} {path}`" in text, (name, method, path)
