"""Page sessions as an attacker meets them: a cookie copied before sign-out, after a password
change, or kept past its lifetimes. Each guard beside the attack succeeding without it."""

import re
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from control_plane.auth import service as auth_service
from control_plane.auth.passwords import Passwords
from control_plane.demo import DEMO_PASSWORD, seed_demo

ADMIN = "admin@example.com"


@pytest.fixture
def pages(client: TestClient) -> Iterator[TestClient]:
    with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
        seed_demo(session, client.app.state.passwords)  # type: ignore[attr-defined]
        session.commit()
    yield client


def csrf(client: TestClient) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
    assert match is not None
    return match[1]


def sign_in(client: TestClient, email: str = ADMIN, password: str = DEMO_PASSWORD) -> int:
    form = {"email": email, "password": password, "csrf": csrf(client)}
    return client.post("/login", data=form, follow_redirects=False).status_code


def visit(client: TestClient, cookie: str) -> tuple[int, str]:
    """The rollout page with exactly this cookie; its status and the cookie to use next."""
    client.cookies.clear()
    client.cookies.set("switchboard_session", cookie)
    response = client.get("/rollout", follow_redirects=False)
    client.cookies.clear()
    return response.status_code, response.cookies.get("switchboard_session") or cookie


def rollout_status(client: TestClient, cookie: str) -> int:
    return visit(client, cookie)[0]


def signed_in_cookie(client: TestClient) -> str:
    client.cookies.clear()
    assert sign_in(client) == 303
    cookie = client.cookies.get("switchboard_session")
    assert cookie and rollout_status(client, cookie) == 200
    return cookie


def sign_out(client: TestClient, cookie: str) -> None:
    client.cookies.clear()
    client.cookies.set("switchboard_session", cookie)
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/rollout").text)
    assert token is not None
    response = client.post("/logout", data={"csrf": token[1]}, follow_redirects=False)
    assert response.status_code == 303


def test_a_cookie_copied_before_sign_out_is_dead(pages: TestClient) -> None:
    copied = signed_in_cookie(pages)
    sign_out(pages, copied)
    assert rollout_status(pages, copied) == 303  # to /login


def test_without_revocation_a_copied_cookie_outlives_sign_out(
    pages: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth_service, "end_sessions", lambda session, user: None)
    copied = signed_in_cookie(pages)
    sign_out(pages, copied)
    assert rollout_status(pages, copied) == 200


def test_a_password_change_ends_every_session(pages: TestClient) -> None:
    copied = signed_in_cookie(pages)
    with Session(pages.app.state.engine) as session:  # type: ignore[attr-defined]
        passwords = pages.app.state.passwords  # type: ignore[attr-defined]
        auth_service.set_password(session, passwords, ADMIN, "a brand new password")
        session.commit()
    assert rollout_status(pages, copied) == 303
    pages.cookies.clear()
    assert sign_in(pages, password="a brand new password") == 303


def test_sessions_end_after_the_idle_and_absolute_lifetimes(
    pages: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = pages.app.state.settings  # type: ignore[attr-defined]
    cookie = signed_in_cookie(pages)
    now = time.time()
    idle = settings.session_idle_minutes * 60
    monkeypatch.setattr(time, "time", lambda: now + idle - 5)
    assert rollout_status(pages, cookie) == 200  # still within the idle lifetime
    monkeypatch.setattr(time, "time", lambda: now + idle + 5)
    assert rollout_status(pages, cookie) == 303
    # Kept busy, a session still ends at the absolute lifetime.
    monkeypatch.setattr(time, "time", lambda: now)
    cookie = signed_in_cookie(pages)
    step, elapsed = idle // 2, 0
    while elapsed + step < settings.session_absolute_hours * 3600:
        elapsed += step
        monkeypatch.setattr(time, "time", lambda at=now + elapsed: at)
        status, cookie = visit(pages, cookie)
        assert status == 200, elapsed
    monkeypatch.setattr(time, "time", lambda: now + settings.session_absolute_hours * 3600 + 5)
    assert rollout_status(pages, cookie) == 303


def wrong_then_right(client: TestClient, wrong: int) -> list[int]:
    client.cookies.clear()
    answers = [sign_in(client, password=f"guess number {i}") for i in range(wrong)]
    return [*answers, sign_in(client)]


# More guesses than an account (5) and an address (20) get free: past both limits. Each unthrottled
# guess is a full argon2 check, so the twin below pays for every one of them.
GUESSES = 25


def test_guessing_passwords_is_throttled(
    pages: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    # Locks that outlast the test however slow the machine is (the default first lock is 1 s;
    # that locks end is the next test's business, on an injected clock).
    state = pages.app.state  # type: ignore[attr-defined]
    monkeypatch.setattr(state, "throttle_policy", replace(state.throttle_policy, base_seconds=600))
    answers = wrong_then_right(pages, GUESSES)
    assert answers[:5] == [401] * 5  # the free attempts
    assert answers[5:] == [429] * (GUESSES - 4)  # then locked, the right password included
    assert (
        pages.cookies.get("switchboard_session") is None
        or rollout_status(pages, pages.cookies.get("switchboard_session") or "") == 303
    )
    refused = pages.post(
        "/login",
        data={"email": ADMIN, "password": DEMO_PASSWORD, "csrf": csrf(pages)},
        follow_redirects=False,
    )
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert "Too many failed sign-ins" in refused.text


def test_without_throttling_the_same_guesses_then_the_right_one_get_in(
    pages: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from control_plane.auth import throttle

    monkeypatch.setattr(throttle, "retry_after", lambda session, keys, now=None: None)
    answers = wrong_then_right(pages, GUESSES)
    assert set(answers[:GUESSES]) == {401} and answers[GUESSES] == 303


def test_a_lock_is_per_account_and_address_and_ends(pages: TestClient) -> None:
    from datetime import timedelta

    from control_plane.auth import throttle
    from control_plane.core import utcnow

    assert wrong_then_right(pages, 6)[-1] == 429
    # Another account from the same address is not locked (the address allows 20).
    assert sign_in(pages, email="ava@acme.example") == 303
    with Session(pages.app.state.engine) as session:  # type: ignore[attr-defined]
        keys = throttle.keys_for(ADMIN, "testclient")
        later = utcnow() + timedelta(seconds=3)  # 1 s * 2^1 after the sixth failure
        assert throttle.retry_after(session, keys) is not None
        assert throttle.retry_after(session, keys, now=later) is None


def most_hashing_at_once(pages: TestClient, monkeypatch: pytest.MonkeyPatch, sign_ins: int) -> int:
    """Sign in `sign_ins` times at once (each browser its own cookies); how many password
    checks ran at the same moment. Each check is held for 0.5 s so that overlaps show."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    real = auth_service.authenticate_user
    lock = threading.Lock()
    running, most = [0], [0]

    def counted(session: Session, passwords: Passwords, email: str, password: str) -> object:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            time.sleep(0.5)
            return real(session, passwords, email, password)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(auth_service, "authenticate_user", counted)

    def one_browser(_: int) -> int:
        browser = TestClient(pages.app)  # the app is running already: no second lifespan
        return sign_in(browser)

    with ThreadPoolExecutor(sign_ins) as pool:
        assert list(pool.map(one_browser, range(sign_ins))) == [303] * sign_ins
    return most[0]


def test_at_most_the_bound_of_password_checks_run_at_once(
    pages: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    bound = pages.app.state.settings.max_concurrent_password_hashes  # type: ignore[attr-defined]
    assert most_hashing_at_once(pages, monkeypatch, sign_ins=3 * bound) <= bound


def test_without_the_bound_every_sign_in_hashes_at_once(
    pages: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    bound = pages.app.state.settings.max_concurrent_password_hashes  # type: ignore[attr-defined]
    state = pages.app.state  # type: ignore[attr-defined]
    monkeypatch.setattr(state, "password_hashing", threading.BoundedSemaphore(1000))
    assert most_hashing_at_once(pages, monkeypatch, sign_ins=3 * bound) > bound


def from_address(pages: TestClient, address: str) -> TestClient:
    """A browser at `address` (the app is running already: no second lifespan)."""
    return TestClient(pages.app, client=(address, 40000))


def lock_out_attempt(pages: TestClient, rounds: int) -> list[int]:
    """The attack: each round, wrong guesses for the admin from fresh addresses, one per
    address, past the account's free attempts; then the admin signs in from its usual address
    with the right password. What the admin got, round by round."""
    admin = from_address(pages, "198.51.100.10")
    answers, address = [], 0
    for _ in range(rounds):
        for _ in range(6):
            address += 1
            attacker = from_address(pages, f"203.0.113.{address}")
            assert sign_in(attacker, password=f"wrong {address}") in (401, 429)
        admin.cookies.clear()
        answers.append(sign_in(admin))
    return answers


def test_guesses_from_other_addresses_never_lock_the_admin_out(pages: TestClient) -> None:
    assert lock_out_attempt(pages, 3) == [303] * 3


def test_with_an_account_wide_lock_an_attacker_keeps_the_admin_out(
    pages: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from control_plane.auth import throttle

    def account_wide(email: str, address: str | None) -> list[str]:
        return [f"pair:{email.strip().lower()}|anywhere", f"address:{address}"]

    monkeypatch.setattr(throttle, "keys_for", account_wide)
    assert lock_out_attempt(pages, 3) == [429] * 3


def long_locks(pages: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Locks that outlast the test however slow the machine is (the first is 1 s otherwise)."""
    from dataclasses import replace

    state = pages.app.state  # type: ignore[attr-defined]
    monkeypatch.setattr(state, "throttle_policy", replace(state.throttle_policy, base_seconds=600))


def test_a_lock_holds_the_guessing_address_only(
    pages: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    long_locks(pages, monkeypatch)
    guesser = from_address(pages, "203.0.113.50")
    assert [sign_in(guesser, password=f"wrong {i}") for i in range(6)] == [401] * 5 + [429]
    assert sign_in(guesser) == 429  # the right password from the locked address waits
    assert sign_in(from_address(pages, "198.51.100.10")) == 303  # from elsewhere it gets in


def test_one_address_guessing_many_accounts_is_locked(
    pages: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    long_locks(pages, monkeypatch)
    sprayer = from_address(pages, "203.0.113.60")
    answers = [sign_in(sprayer, email=f"user{i}@example.com", password="x") for i in range(21)]
    assert answers == [401] * 20 + [429]
