"""`python -m services.grader` / `tierflow grader`: the grader against configured servers."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from services.grader.app import create_app
from shared.settings import GraderSettings
from shared.startup import start_service


def main() -> None:
    """Build settings from the environment and serve until stopped."""
    settings = start_service(GraderSettings, "grader")
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
    return create_app(start_service(GraderSettings, "grader"))


if __name__ == "__main__":
    main()
