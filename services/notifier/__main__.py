"""`python -m services.notifier` / `tierflow notifier`: settings, topics, then the HTTP server."""

from __future__ import annotations

import asyncio
import logging

import uvicorn
from aiokafka.errors import KafkaError

from services.notifier.app import create_app
from shared.kafka import ensure_topics
from shared.settings import NotifierSettings
from shared.startup import start_service

log = logging.getLogger("services.notifier")

TOPICS_DEADLINE_S = 30.0
TOPICS_RETRY_S = 1.0


async def prepare_topics(settings: NotifierSettings) -> None:
    """Create the topics, waiting a little for a broker that is still starting."""
    deadline = asyncio.get_running_loop().time() + TOPICS_DEADLINE_S
    while True:
        try:
            await ensure_topics(settings)
            return
        except (KafkaError, OSError) as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.warning("broker not ready yet (%r); retrying", exc)
        await asyncio.sleep(TOPICS_RETRY_S)


def main() -> None:
    """Run the notifier until interrupted."""
    settings = start_service(NotifierSettings, "notifier")
    try:
        asyncio.run(prepare_topics(settings))
    except (KafkaError, OSError) as exc:
        log.error("cannot reach the broker at %s: %r", settings.kafka_bootstrap, exc)
        raise SystemExit(1) from None
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.notifier_port,
        log_level=settings.log_level.lower(),
    )


if __name__ == "__main__":
    main()
