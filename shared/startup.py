"""How every service process starts: its settings from the environment, then logging."""

from __future__ import annotations

import logging
import sys
from typing import TypeVar

from pydantic import ValidationError

from shared.settings import CommonSettings, settings_problems

Settings = TypeVar("Settings", bound=CommonSettings)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def start_service(settings_class: type[Settings], program: str) -> Settings:
    """The settings of `program` ("ingest", "grader", "notifier"), with logging set up.

    A bad setting exits 2 with one line per bad variable, named as it is set and without
    its value (it may be a key): `tierflow <program>: invalid setting TIERFLOW_…: reason`.
    """
    try:
        settings = settings_class()
    except ValidationError as exc:
        for line in settings_problems(exc):
            sys.stderr.write(f"tierflow {program}: {line}\n")
        raise SystemExit(2) from None
    _configure_logging(settings.log_level)
    return settings


def _configure_logging(level: str) -> None:
    """Plain timestamped lines on stderr."""
    logging.basicConfig(level=level, format=LOG_FORMAT)
    # aiokafka narrates subscriptions and group (re)joins at INFO; tierflow logs what they
    # mean for it, so only aiokafka's warnings and errors are kept.
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
