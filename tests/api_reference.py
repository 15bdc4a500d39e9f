"""docs/api-reference.md, generated from the three services' OpenAPI documents, so the
reference cannot drift from the code (tests/unit/test_api_reference.py compares them).

    .venv/bin/python -m tests.api_reference > docs/api-reference.md
"""

from __future__ import annotations

import os
import sys
from typing import Any

from fastapi import FastAPI
from pydantic import SecretStr

from services.grader.app import create_app as create_grader
from services.ingest.app import create_app as create_ingest
from services.notifier.app import create_app as create_notifier
from shared.settings import GraderSettings, IngestSettings, NotifierSettings

KEYS = SecretStr('{"reference-key-0000000001": ["admin"]}')
# Settings only shape nothing in the documents but these; no server is contacted.
DB = SecretStr("postgresql+asyncpg://reference@127.0.0.1:9/reference")
METHODS = ("get", "post", "put", "patch", "delete")


def apps() -> list[tuple[str, int, FastAPI]]:
    """(name, default port, app) of each service, with the default settings (whatever
    TIERFLOW_* variables this shell has)."""
    saved = {n: os.environ.pop(n) for n in list(os.environ) if n.startswith("TIERFLOW_")}
    try:
        ingest = IngestSettings(api_keys=KEYS)
        grader = GraderSettings(api_keys=KEYS, database_url=DB, grader_role="api")
        notifier = NotifierSettings(api_keys=KEYS, database_url=DB)
    finally:
        os.environ.update(saved)
    return [("ingest", ingest.ingest_port, create_ingest(ingest)),
            ("grader", grader.grader_port, create_grader(grader)),
            ("notifier", notifier.notifier_port, create_notifier(notifier))]


def schema_name(schema: dict[str, Any]) -> str:
    """A short type for a schema: `Customer`, `array of X`, `string`."""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " or ".join(schema_name(s) for s in schema["anyOf"])
    if schema.get("type") == "array":
        return f"array of {schema_name(schema.get('items', {}))}"
    return str(schema.get("type", "object"))


def render() -> str:
    """The whole reference, in Markdown."""
    out = ["# API reference", "",
           "Generated from the services' OpenAPI documents by "
           "`python -m tests.api_reference`; a test fails when this file and the code "
           "differ. Each service also serves its document at `/openapi.json` and a browsable "
           "form at `/docs`. The guide to the same API, with examples, is "
           "[api.md](api.md).", ""]
    for name, port, app in apps():
        doc = app.openapi()
        out += [f"## {name} (port {port})", ""]
        for path, item in sorted(doc["paths"].items()):
            for method in METHODS:
                op = item.get(method)
                if op is None:
                    continue
                out += [f"### `{method.upper()} {path}`", ""]
                summary = (op.get("description") or op.get("summary") or "").strip()
                if summary:
                    out += [summary, ""]
                params = op.get("parameters", [])
                if params:
                    out += ["| parameter | in | type | required | |", "|---|---|---|---|---|"]
                    for p in params:
                        described = " ".join(str(p.get("description", "")).split())
                        out.append(f"| `{p['name']}` | {p['in']} | "
                                   f"{schema_name(p.get('schema', {}))} | "
                                   f"{'yes' if p.get('required') else 'no'} | {described} |")
                    out.append("")
                body = op.get("requestBody")
                if body:
                    kinds = ", ".join(f"`{k}`" for k in body.get("content", {}))
                    out += [f"Body: {kinds}"
                            f"{' (required)' if body.get('required') else ''}.", ""]
                out += ["| status | meaning |", "|---|---|"]
                for status, answer in sorted(op.get("responses", {}).items()):
                    text = " ".join(str(answer.get("description", "")).split())
                    content = answer.get("content", {})
                    shapes = [f"`{schema_name(c.get('schema', {}))}`"
                              for c in content.values() if c.get("schema")]
                    if shapes:
                        text += f" ({', '.join(sorted(set(shapes)))})"
                    out.append(f"| {status} | {text} |")
                out.append("")
        schemas = doc.get("components", {}).get("schemas", {})
        if schemas:
            out += [f"### {name}: schemas", ""]
            for schema, spec in sorted(schemas.items()):
                fields = spec.get("properties", {})
                if not fields:
                    continue
                required = set(spec.get("required", []))
                out += [f"**{schema}**" + (f" — {' '.join(spec['description'].split())}"
                                           if spec.get("description") else ""), "",
                        "| field | type | |", "|---|---|---|"]
                for field, fs in fields.items():
                    described = " ".join(str(fs.get("description", "")).split())
                    mark = "" if field in required else " (optional)"
                    out.append(f"| `{field}`{mark} | {schema_name(fs)} | {described} |")
                out.append("")
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
