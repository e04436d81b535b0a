"""Settings come from Q2C_ variables, then a settings file, then the state folder's secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.stack import ensure_secrets
from settings import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("Q2C_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def test_defaults_are_the_demo_stack_on_loopback() -> None:
    s = load_settings()
    assert (s.host, s.temporal_port, s.temporal_ui_port, s.tryton_port) == (
        "127.0.0.1",
        7233,
        8233,
        8000,
    )
    assert (s.salesforce_port, s.stripe_port, s.service_port) == (8101, 8102, 8080)
    assert s.run_link("opportunity-to-project:salesforce:006A") == (
        "http://127.0.0.1:8233/namespaces/default/workflows/opportunity-to-project:salesforce:006A"
    )
    assert s.store_url.startswith("sqlite+aiosqlite:///") and s.store_url.endswith("q2c.sqlite")


def test_environment_beats_settings_file_beats_secrets_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    ensure_secrets(state)
    generated = load_settings(state_dir=state)
    assert generated.stripe_api_key.get_secret_value().startswith("sk_test_")
    assert len(generated.tryton_password.get_secret_value()) >= 16

    settings_file = tmp_path / "q2c.env"
    settings_file.write_text("Q2C_STRIPE_API_KEY=sk_test_fromfile\nQ2C_TRYTON_PORT=9000\n")
    monkeypatch.setenv("Q2C_SETTINGS_FILE", str(settings_file))
    monkeypatch.setenv("Q2C_TRYTON_PORT", "9100")
    s = load_settings(state_dir=state)
    assert s.stripe_api_key.get_secret_value() == "sk_test_fromfile"
    assert s.tryton_port == 9100
    # The generated secret still fills what neither the environment nor the file set.
    assert s.tryton_password == generated.tryton_password


def test_secrets_never_show_in_a_repr(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ensure_secrets(state)
    s = load_settings(state_dir=state)
    secret = s.stripe_api_key.get_secret_value()
    assert secret not in repr(s) and secret not in str(s.model_dump())
    # A second call keeps the secrets: restarting the stack must not change passwords.
    before = (state / "secrets.env").read_text()
    ensure_secrets(state)
    assert (state / "secrets.env").read_text() == before


def test_bad_port_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("Q2C_TRYTON_PORT", "eighty")
    with pytest.raises(ValueError, match="tryton_port"):
        load_settings()
