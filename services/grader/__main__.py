"""`python -m services.grader` / `tierflow grader`: the grader against configured servers."""

from __future__ import annotations

import sys

import uvicorn
from pydantic import ValidationError

from services.grader.app import create_app
from shared.logs import configure
from shared.settings import GraderSettings, settings_error


def main() -> None:
    """Build settings from the environment and serve until stopped."""
    try:
        settings = GraderSettings()
    except ValidationError as exc:
        sys.stderr.write(settings_error(exc) + "\n")
        sys.exit(2)
    configure(settings.log_level)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.grader_port,
                log_level=settings.log_level.lower(), access_log=False)


if __name__ == "__main__":
    main()
