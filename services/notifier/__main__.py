"""`python -m services.notifier`: settings from the environment, topics, then the HTTP server."""

from __future__ import annotations

import asyncio
import logging
import sys

import uvicorn
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from services.notifier.app import create_app
from shared.kafka import ensure_topics
from shared.settings import NotifierSettings

log = logging.getLogger("services.notifier")

TOPICS_DEADLINE_S = 30.0
TOPICS_RETRY_S = 1.0


def load_settings() -> NotifierSettings:
    """The settings, or exit 2 with one line per bad variable (named, value not echoed)."""
    try:
        settings = NotifierSettings()
    except ValidationError as exc:
        for err in exc.errors():
            name = "TIERFLOW_" + str(err["loc"][0]).upper() if err["loc"] else "settings"
            reason = str(err["msg"]).removeprefix("Value error, ")
            sys.stderr.write(f"tierflow notifier: {name}: {reason}\n")
        raise SystemExit(2) from None
    if not isinstance(logging.getLevelName(settings.log_level.upper()), int):
        sys.stderr.write("tierflow notifier: TIERFLOW_LOG_LEVEL: not a logging level\n")
        raise SystemExit(2)
    return settings


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
    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
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
