"""Sign-in throttling holds across processes: failures counted by one Switchboard process lock
the account in another (the count lives in PostgreSQL)."""

import re

import httpx
import pytest
from sqlmodel import Session

from control_plane.auth import service as auth_service
from control_plane.auth.passwords import Passwords
from control_plane.db import make_engine
from control_plane.settings import Settings
from tests.conftest import PrivatePostgres
from tests.integration.test_session_config_resilience import two_processes  # noqa: F401

pytestmark = pytest.mark.postgres
EMAIL, PASSWORD = "ops@example.com", "the right password 42"


def add_user(url: str) -> None:
    settings = Settings(_env_file=None, database_url=url)  # type: ignore[call-arg]
    engine = make_engine(settings)
    with Session(engine) as session:
        passwords = Passwords(settings.password_hash_cost)
        auth_service.create_user(session, passwords, email=EMAIL, password=PASSWORD, role="admin")
        session.commit()
    engine.dispose()


def attempt(base_url: str, password: str) -> int:
    with httpx.Client(base_url=base_url, timeout=15) as http:
        page = http.get("/login").text
        token = re.search(r'name="csrf" value="([^"]+)"', page)
        assert token is not None
        form = {"email": EMAIL, "password": password, "csrf": token[1]}
        return http.post("/login", data=form, follow_redirects=False).status_code


def test_failures_in_one_process_lock_the_account_in_the_other(
    two_processes: list[str],  # noqa: F811
    private_postgres: PrivatePostgres,
) -> None:
    add_user(private_postgres.url())
    one, other = two_processes
    answers = [attempt(one if i % 2 else other, f"wrong {i}") for i in range(5)]
    assert answers == [401] * 5
    assert attempt(one, PASSWORD) == 429
    assert attempt(other, PASSWORD) == 429
