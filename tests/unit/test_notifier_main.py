"""The notifier refuses bad settings with a message naming the variable, and exit code 2."""

from __future__ import annotations

import pytest

from services.notifier.__main__ import main


def test_bad_variable_exits_2_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TIERFLOW_NOTIFIER_PORT", "eighty")
    monkeypatch.setenv("TIERFLOW_DATABASE_URL", "postgresql://secret-password@h/db")
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "TIERFLOW_NOTIFIER_PORT" in err
    assert "TIERFLOW_DATABASE_URL" in err
    assert "secret-password" not in err
    assert "Traceback" not in err


def test_bad_log_level_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TIERFLOW_LOG_LEVEL", "chatty")
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert "TIERFLOW_LOG_LEVEL" in capsys.readouterr().err
