"""`python -m services.ingest` / `tierflow ingest`: settings from the environment, then serve."""

from __future__ import annotations

import uvicorn

from services.ingest.app import create_app
from shared.settings import IngestSettings
from shared.startup import start_service


def main() -> None:
    """Run the ingest process until interrupted."""
    settings = start_service(IngestSettings, "ingest")
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.ingest_port,
        log_level=settings.log_level.lower(), server_header=False, access_log=False,
    )


if __name__ == "__main__":
    main()
