"""An invalid setting is named by its environment variable, and its value is not echoed: a
secret pasted into the wrong variable must not end up in a terminal log or a CI transcript."""

import pytest
from pydantic import ValidationError

from control_plane.settings import Settings
from switchboard_runtime.worker.settings import SettingsError, WorkerSettings, load_settings

PASTED_SECRET = "xai-pasted-into-the-wrong-variable-7f3a9c"


def test_the_refusal_names_the_variable_and_not_the_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SWITCHBOARD_CONTROL_PLANE_MAX_CONCURRENT_REQUESTS", PASTED_SECRET)
    monkeypatch.setenv("SWITCHBOARD_WORKER_MAX_CALLS", "0")
    with pytest.raises(SettingsError) as refused:
        load_settings(WorkerSettings)
    assert refused.value.lines == [
        "SWITCHBOARD_CONTROL_PLANE_MAX_CONCURRENT_REQUESTS: Input should be a valid integer, "
        "unable to parse string as an integer",
        "SWITCHBOARD_WORKER_MAX_CALLS: Input should be greater than or equal to 1",
    ]
    assert PASTED_SECRET not in str(refused.value)


def test_without_it_pydantic_echoes_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_MAX_AGENTS_PER_WORKSPACE", PASTED_SECRET)
    with pytest.raises(SettingsError) as refused:
        load_settings(Settings)
    assert PASTED_SECRET not in str(refused.value)
    with pytest.raises(ValidationError) as raw:
        Settings()
    assert PASTED_SECRET in str(raw.value)
