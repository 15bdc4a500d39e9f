"""Logging set up once per process, in `__main__`."""

from __future__ import annotations

import logging


def configure(level: str) -> None:
    """Plain timestamped lines on stderr."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # aiokafka logs every retry of a lost connection at ERROR; ours say what it means.
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
