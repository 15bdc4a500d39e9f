"""`python -m services.ingest`: settings from the environment, then serve."""

from __future__ import annotations

import logging
import sys

import uvicorn
from pydantic import ValidationError

from services.ingest.app import create_app
from shared.settings import IngestSettings


def settings_problems(exc: ValidationError, *, prefix: str = "TIERFLOW_") -> str:
    """One line per bad variable, named as it is set; the value itself is never echoed."""
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        name = prefix + "_".join(str(p) for p in err["loc"]).upper()
        lines.append(f"{name}: {err['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


def main() -> None:
    """Run the ingest process until interrupted."""
    try:
        settings = IngestSettings()
    except ValidationError as exc:
        sys.stderr.write(f"tierflow ingest: invalid configuration\n{settings_problems(exc)}\n")
        raise SystemExit(2) from None
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.ingest_port,
        log_level=settings.log_level.lower(), server_header=False, access_log=False,
    )


if __name__ == "__main__":
    main()
