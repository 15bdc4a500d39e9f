"""`python -m services.grader` / `tierflow grader`: the grader against configured servers."""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI
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
    serve = {"host": settings.host, "port": settings.grader_port,
             "log_level": settings.log_level.lower(), "access_log": False}
    if settings.grader_role == "api" and settings.grader_api_workers > 1:
        # Worker processes import the app by name and read the same environment.
        uvicorn.run("services.grader.__main__:app_from_environment", factory=True,
                    workers=settings.grader_api_workers, **serve)  # type: ignore[arg-type]
    else:
        uvicorn.run(create_app(settings), **serve)  # type: ignore[arg-type]


def app_from_environment() -> FastAPI:
    """The app of one API worker process (settings already validated by `main`)."""
    settings = GraderSettings()
    configure(settings.log_level)
    return create_app(settings)


if __name__ == "__main__":
    main()
