"""Password hashing at the cost the settings choose (control_plane/auth/passwords.py). The suite
itself runs with `cheapest` (tests/conftest.py); these tests pin what production gets."""

import argon2
from pydantic import SecretStr

from control_plane.auth.passwords import Passwords
from control_plane.settings import Settings, production_refusals


def production(**overrides: object) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="production",
        session_secret=SecretStr("s" * 48),
        **overrides,
    )


def test_the_standard_cost_is_rfc_9106_low_memory_and_the_default() -> None:
    default = Settings(_env_file=None, password_hash_cost="standard")  # type: ignore[call-arg]
    stored = Passwords(default.password_hash_cost).hash("a long enough password")
    parameters = argon2.extract_parameters(stored)
    assert (parameters.type, parameters.time_cost, parameters.memory_cost) == (
        argon2.Type.ID,
        3,
        65_536,
    )
    assert Settings.model_fields["password_hash_cost"].default == "standard"


def test_either_cost_checks_a_password_and_refuses_a_wrong_one() -> None:
    for cost in ("standard", "cheapest"):
        passwords = Passwords(cost)  # type: ignore[arg-type]
        stored = passwords.hash("the right password")
        assert passwords.matches(stored, "the right password")
        assert not passwords.matches(stored, "the wrong password")
        assert not passwords.matches("not a hash", "the right password")


def test_a_hash_carries_its_cost_so_it_verifies_after_the_setting_changes() -> None:
    made_cheaply = Passwords("cheapest").hash("the right password")
    assert Passwords("standard").matches(made_cheaply, "the right password")


def test_nobody_signs_in_as_a_person_who_does_not_exist() -> None:
    """With nothing stored, a stand-in hash is checked so the answer takes as long; even its own
    password must not match."""
    passwords = Passwords("cheapest")
    assert not passwords.matches(None, "switchboard-timing-equaliser")
    assert not passwords.matches(None, "anything")


def test_production_refuses_the_cheapest_cost() -> None:
    refusals = production_refusals(production(password_hash_cost="cheapest"))
    assert any("SWITCHBOARD_PASSWORD_HASH_COST" in line for line in refusals)
    assert production_refusals(production(password_hash_cost="standard")) == []


def test_outside_production_the_cheapest_cost_is_allowed() -> None:
    test_settings = Settings(_env_file=None, environment="test", password_hash_cost="cheapest")  # type: ignore[call-arg]
    assert production_refusals(test_settings) == []
