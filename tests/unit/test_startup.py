"""One way to start a service: settings with one error format, one logging set-up, for the
three services run directly and through `tierflow`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from services.cli import main as cli
from services.grader.__main__ import main as grader
from services.ingest.__main__ import main as ingest
from services.notifier.__main__ import main as notifier
from shared.settings import LOG_LEVELS, NotifierSettings
from shared.startup import LOG_FORMAT, start_service

MAINS: dict[str, Callable[[], None]] = {"ingest": ingest, "grader": grader, "notifier": notifier}
LEVELS = "must be one of " + ", ".join(LOG_LEVELS)


@contextmanager
def fresh_logging() -> Iterator[logging.Logger]:
    """The root logger as in a new process (pytest gives it handlers), then as it was."""
    root, kafka = logging.getLogger(), logging.getLogger("aiokafka")
    handlers, levels = root.handlers[:], (root.level, kafka.level)
    root.handlers.clear()
    try:
        yield root
    finally:
        root.handlers[:] = handlers
        root.setLevel(levels[0])
        kafka.setLevel(levels[1])


def root_format(root: logging.Logger) -> list[str | None]:
    """The format of each handler of the root logger."""
    return [h.formatter._fmt if h.formatter else None for h in root.handlers]


@pytest.mark.parametrize("service", sorted(MAINS))
def test_every_service_reports_bad_settings_alike(
    service: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TIERFLOW_KAFKA_BOOTSTRAP", "nohost")
    monkeypatch.setenv("TIERFLOW_LOG_LEVEL", "chatty")
    with pytest.raises(SystemExit) as exit_info:
        MAINS[service]()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"tierflow {service}: invalid setting TIERFLOW_KAFKA_BOOTSTRAP: 'nohost' is not host:port",
        f"tierflow {service}: invalid setting TIERFLOW_LOG_LEVEL: {LEVELS}",
    ]


def test_the_cli_reports_bad_settings_alike(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TIERFLOW_KAFKA_BOOTSTRAP", "nohost")
    monkeypatch.setenv("TIERFLOW_LOG_LEVEL", "chatty")
    assert cli(["migrate"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "tierflow: invalid setting TIERFLOW_KAFKA_BOOTSTRAP: 'nohost' is not host:port",
        f"tierflow: invalid setting TIERFLOW_LOG_LEVEL: {LEVELS}",
    ]


@pytest.mark.parametrize("command", ["ingest", "grader", "notifier", "up", "demo", "migrate"])
def test_a_bad_log_level_is_one_line_whatever_the_command(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`TIERFLOW_LOG_LEVEL=LOUD tierflow ingest` (or up, demo, …): exit 2 and one line
    naming the variable and the levels it takes, no traceback, nothing started."""
    monkeypatch.setenv("TIERFLOW_LOG_LEVEL", "LOUD")
    for module in ("up", "demo"):  # should the settings pass, nothing starts here
        monkeypatch.setattr(f"services.cli.{module}._run", _must_not_start)
    data_dir = tmp_path / "data"
    args = [command, "--data-dir", str(data_dir)] if command in ("up", "demo") else [command]
    with fresh_logging():
        try:
            code = cli(args)
        except SystemExit as exit_info:  # a service exits as its own process would
            code = exit_info.code
    prefix = f"tierflow {command}" if command in MAINS else "tierflow"
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{prefix}: invalid setting TIERFLOW_LOG_LEVEL: {LEVELS}"]
    assert not data_dir.exists()


def test_a_good_environment_gives_the_settings_and_logging(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TIERFLOW_RELAY_BATCH", "50")
    monkeypatch.setenv("TIERFLOW_LOG_LEVEL", "debug")
    with fresh_logging() as root:
        settings = start_service(NotifierSettings, "notifier")
        assert (settings.relay_batch, settings.log_level) == (50, "DEBUG")
        assert (root.level, root_format(root)) == (logging.DEBUG, [LOG_FORMAT])
        assert logging.getLogger("aiokafka").getEffectiveLevel() == logging.WARNING


@pytest.mark.parametrize("service", sorted(MAINS))
def test_a_service_run_by_tierflow_logs_as_configured(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tierflow grader` (the image's entry point) logs at TIERFLOW_LOG_LEVEL, as
    `python -m services.grader` does: the command line leaves logging to the service."""
    monkeypatch.setenv("TIERFLOW_LOG_LEVEL", "DEBUG")
    seen: list[tuple[int, list[str | None]]] = []
    with fresh_logging() as root:

        def serve(*_: object, **__: object) -> None:  # instead of the HTTP server
            seen.append((root.level, root_format(root)))

        monkeypatch.setattr("uvicorn.run", serve)
        if service == "notifier":  # it creates its topics before serving
            monkeypatch.setattr("services.notifier.__main__.prepare_topics", _no_topics)
        assert cli([service]) == 0
    assert seen == [(logging.DEBUG, [LOG_FORMAT])]


async def _no_topics(*_: object) -> None:
    return None


def _must_not_start(*_: object, **__: object) -> None:
    raise AssertionError("the system was started with a bad setting")
