"""`python -m services.ingest` refuses bad configuration with a message, not a traceback."""

from __future__ import annotations

import pytest

from services.ingest.__main__ import main


@pytest.mark.parametrize(
    ("variable", "value"),
    [("TIERFLOW_INGEST_PORT", "not-a-port"), ("TIERFLOW_KAFKA_BOOTSTRAP", "nohost"),
     ("TIERFLOW_MAX_BATCH_EVENTS", "0")],
)
def test_bad_setting_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert variable in err
    assert "Traceback" not in err


def test_bad_api_keys_are_not_echoed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    too_short = "short-key-x"
    monkeypatch.setenv("TIERFLOW_API_KEYS", f'{{"{too_short}": ["events:write"]}}')
    with pytest.raises(SystemExit):
        main()
    err = capsys.readouterr().err
    assert "TIERFLOW_API_KEYS" in err
    assert too_short not in err
