"""Workspace provider keys: write-only API, validation, isolation, audit, rotation, no leaks."""

import os
import shlex
import subprocess
import threading
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from control_plane.app import create_app
from control_plane.keys import service as keys_service
from control_plane.keys.crypto import DecryptionError, Keyring, generate_master_key, parse_keyring
from control_plane.keys.models import WorkspaceApiKey
from control_plane.settings import Settings
from tests.conftest import FakeXAI, Tokens, auth, skip_or_fail
from tests.fakes.server import BackgroundServer

KEYS = "/api/v1/workspaces/{}/settings/api-keys"
XAI_KEY = "xai-" + "Ab3dEf6hIj9kLmN0pQ2sTu5wXy8z" + "K7q1"
XAI_KEY_2 = "xai-" + "Zz9yXx8wVv7uTt6sSr5qQp4oOn3m" + "R2d2"


def put_keys(
    client: TestClient, token: str, body: dict[str, object], workspace: str = "acme"
) -> httpx.Response:
    return client.put(KEYS.format(workspace), json=body, headers=auth(token))


def xai_status(client: TestClient, token: str, workspace: str = "acme") -> dict[str, object]:
    keys = client.get(KEYS.format(workspace), headers=auth(token)).json()["keys"]
    return next(k for k in keys if k["provider"] == "xai")


def test_set_read_replace_remove(client: TestClient, tokens: Tokens) -> None:
    assert xai_status(client, tokens.acme)["configured"] is False

    response = put_keys(client, tokens.acme, {"xai_api_key": f"  {XAI_KEY}  "})
    assert response.status_code == 200, response.text
    assert XAI_KEY not in response.text
    status = xai_status(client, tokens.acme)
    assert status["configured"] is True
    assert status["last4"] == "K7q1"
    assert str(status["fingerprint"]).startswith("hmac:")
    assert status["updated_by"] == "token:{}:acme".format(status["updated_by"].split(":")[1])  # type: ignore[union-attr]
    first_fingerprint = status["fingerprint"]

    assert put_keys(client, tokens.acme, {"xai_api_key": XAI_KEY_2}).status_code == 200
    assert xai_status(client, tokens.acme)["last4"] == "R2d2"
    # Fields left out are untouched.
    assert put_keys(client, tokens.acme, {}).status_code == 200
    assert xai_status(client, tokens.acme)["last4"] == "R2d2"

    audit = client.get(
        "/api/v1/audit",
        params={"workspace_id": "acme", "action": "key"},
        headers=auth(tokens.admin),
    ).json()
    actions = [(e["action"], e["target"]) for e in audit["entries"]]
    assert actions == [("key.replace", "xai"), ("key.set", "xai")]
    replace = audit["entries"][0]
    assert replace["before"]["fingerprint"] == first_fingerprint
    assert replace["after"]["fingerprint"] == xai_status(client, tokens.acme)["fingerprint"]
    assert XAI_KEY not in str(audit) and XAI_KEY_2 not in str(audit)

    assert put_keys(client, tokens.acme, {"xai_api_key": None}).status_code == 200
    assert xai_status(client, tokens.acme)["configured"] is False
    assert put_keys(client, tokens.acme, {"xai_api_key": XAI_KEY}).status_code == 200
    assert client.delete(KEYS.format("acme") + "/xai", headers=auth(tokens.acme)).status_code == 204
    again = client.delete(KEYS.format("acme") + "/xai", headers=auth(tokens.acme))
    assert again.status_code == 404
    assert again.json()["code"] == "api_key_not_configured"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"xai_api_key": "sk-" + "a" * 40}, "invalid_api_key"),
        ({"xai_api_key": "xai-short"}, "invalid_api_key"),
        ({"xai_api_key": "xai-" + "a" * 300}, "invalid_api_key"),
        ({"xai_api_key": "xai-" + "a" * 30 + " b"}, "invalid_api_key"),
        ({"xai_api_key": "xai-" + "a" * 30 + "\u00e9"}, "invalid_api_key"),
        ({"xai_api_key": 12345}, "validation_error"),
        ({"anthropic_api_key": "key-" + "a" * 30}, "provider_not_found"),
        ({"surprise": "xai-" + "a" * 30}, "invalid_api_key_field"),
        # One bad field rejects the whole request: the valid xAI key is not stored either.
        ({"xai_api_key": XAI_KEY, "openai_api_key": "nope"}, "invalid_api_key"),
    ],
)
def test_invalid_keys_are_rejected_and_nothing_is_stored(
    client: TestClient, tokens: Tokens, body: dict[str, object], code: str
) -> None:
    response = put_keys(client, tokens.acme, body)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code
    for value in body.values():
        if isinstance(value, str):
            assert value not in response.text
    assert all(
        not k["configured"]
        for k in client.get(KEYS.format("acme"), headers=auth(tokens.acme)).json()["keys"]
    )
    assert (
        client.get("/api/v1/audit", params={"action": "key"}, headers=auth(tokens.admin)).json()[
            "entries"
        ]
        == []
    )


def test_workspace_isolation_on_every_key_route(client: TestClient, tokens: Tokens) -> None:
    assert put_keys(client, tokens.acme, {"xai_api_key": XAI_KEY}).status_code == 200
    attempts = [
        ("GET", KEYS.format("acme"), None),
        ("PUT", KEYS.format("acme"), {"xai_api_key": XAI_KEY_2}),
        ("PUT", KEYS.format("acme"), {"xai_api_key": None}),
        ("DELETE", KEYS.format("acme") + "/xai", None),
    ]
    for method, path, body in attempts:
        foreign = client.request(method, path, json=body, headers=auth(tokens.globex))
        assert foreign.status_code == 404, (method, path)
        assert foreign.json()["code"] == "workspace_not_found"
        service = client.request(method, path, json=body, headers=auth(tokens.service))
        assert service.status_code == 403, (method, path)
        assert service.json()["code"] == "keys_forbidden"
        assert client.request(method, path, json=body).status_code == 401
    assert xai_status(client, tokens.acme)["last4"] == "K7q1"
    assert xai_status(client, tokens.admin)["last4"] == "K7q1"


def test_ciphertext_is_bound_to_its_workspace(client: TestClient, tokens: Tokens) -> None:
    put_keys(client, tokens.acme, {"xai_api_key": XAI_KEY})
    put_keys(client, tokens.globex, {"xai_api_key": XAI_KEY_2}, workspace="globex")
    keyring: Keyring = client.app.state.keyring  # type: ignore[attr-defined]
    with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
        assert keys_service.reveal_key(session, keyring, "acme", "xai") == XAI_KEY
        assert keys_service.reveal_key(session, keyring, "globex", "xai") == XAI_KEY_2
        assert keys_service.reveal_key(session, keyring, "globex", "openai") is None
        acme = session.get(WorkspaceApiKey, ("acme", "xai"))
        globex = session.get(WorkspaceApiKey, ("globex", "xai"))
        assert acme and globex
        # A ciphertext copied into another workspace's row does not decrypt.
        globex.ciphertext, globex.nonce = acme.ciphertext, acme.nonce
        session.add(globex)
        session.flush()
        with pytest.raises(DecryptionError):
            keys_service.reveal_key(session, keyring, "globex", "xai")
        session.rollback()


def test_master_key_rotation_keeps_every_key_readable(
    client: TestClient, tokens: Tokens, settings: Settings
) -> None:
    put_keys(client, tokens.acme, {"xai_api_key": XAI_KEY, "openai_api_key": "sk-" + "o" * 40})
    put_keys(client, tokens.globex, {"xai_api_key": XAI_KEY_2}, workspace="globex")
    old: Keyring = client.app.state.keyring  # type: ignore[attr-defined]
    assert settings.master_key_file is not None
    old_entries = parse_keyring(settings.master_key_file.read_text())
    new = Keyring([("k2", __import__("base64").b64decode(generate_master_key())), *old_entries])
    engine = client.app.state.engine  # type: ignore[attr-defined]

    # An interrupted rotation changes nothing; running it again completes it.
    with Session(engine) as session:
        keys_service.rotate_master(session, new, actor="test")
        session.rollback()
    with Session(engine) as session:
        ids = {row.master_key_id for row in session.exec(select(WorkspaceApiKey))}
        assert ids == {old.active_id}
        assert keys_service.rotate_master(session, new, actor="test") == 3
        session.commit()
    with Session(engine) as session:
        assert keys_service.rotate_master(session, new, actor="test") == 0
        session.commit()
        assert {row.master_key_id for row in session.exec(select(WorkspaceApiKey))} == {"k2"}
        only_new = Keyring([new_entry for new_entry in [("k2", new._keys["k2"])]])
        assert keys_service.reveal_key(session, only_new, "acme", "xai") == XAI_KEY
        assert keys_service.reveal_key(session, only_new, "acme", "openai") == "sk-" + "o" * 40
        assert keys_service.reveal_key(session, only_new, "globex", "xai") == XAI_KEY_2
    entries = client.get(
        "/api/v1/audit", params={"action": "master_key.rotate"}, headers=auth(tokens.admin)
    ).json()["entries"]
    assert [e["details"]["re_encrypted"] for e in entries] == [0, 3]


def test_database_file_holds_no_plaintext_key(
    client: TestClient, tokens: Tokens, settings: Settings
) -> None:
    put_keys(client, tokens.acme, {"xai_api_key": XAI_KEY})
    put_keys(client, tokens.acme, {"xai_api_key": XAI_KEY_2})
    client.app.state.engine.dispose()  # type: ignore[attr-defined]
    if settings.is_sqlite:
        path = Path(settings.database_url.removeprefix("sqlite:///"))
        files = [p for p in path.parent.glob(path.name + "*")]
        blob = b"".join(p.read_bytes() for p in files)
        assert len(blob) > 10_000
    else:
        dump = os.environ.get("SWITCHBOARD_TEST_PG_DUMP")
        if not dump:
            skip_or_fail("pg_dump command not provided (run under scripts/test-services.sh)")
        database = settings.database_url.rsplit("/", 1)[1]
        blob = subprocess.run(
            [*shlex.split(dump), database], check=True, capture_output=True
        ).stdout
        assert b"workspace_api_keys" in blob
    for key in (XAI_KEY, XAI_KEY_2):
        assert key.encode() not in blob
        assert key[4:].encode() not in blob


def test_logs_never_hold_a_key(
    client: TestClient, tokens: Tokens, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    put_keys(client, tokens.acme, {"xai_api_key": XAI_KEY})
    put_keys(client, tokens.acme, {"xai_api_key": "xai-not valid " + XAI_KEY[4:]})
    import logging

    logging.getLogger("control_plane.test").warning("leak attempt %s", XAI_KEY)
    try:
        raise RuntimeError(f"boom {XAI_KEY}")
    except RuntimeError:
        logging.getLogger("control_plane.test").exception("with traceback")
    assert "api key set for workspace acme" in caplog.text
    assert XAI_KEY not in caplog.text
    assert XAI_KEY[4:] not in caplog.text
    assert "[REDACTED]" in caplog.text


def test_concurrent_puts_leave_one_winner_and_an_audit_entry_each(
    settings: Settings, tokens: Tokens, client: TestClient
) -> None:
    # Two real HTTP clients against a real server, racing on the same workspace.
    with BackgroundServer(create_app(settings)) as server:
        barrier = threading.Barrier(2)
        results: dict[str, int] = {}

        def put(key: str) -> None:
            with httpx.Client(base_url=server.base_url, timeout=30) as http:
                barrier.wait()
                results[key] = http.put(
                    KEYS.format("acme"), json={"xai_api_key": key}, headers=auth(tokens.acme)
                ).status_code

        threads = [threading.Thread(target=put, args=(key,)) for key in (XAI_KEY, XAI_KEY_2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert results == {XAI_KEY: 200, XAI_KEY_2: 200}
    entries = client.get(
        "/api/v1/audit",
        params={"workspace_id": "acme", "action": "key"},
        headers=auth(tokens.admin),
    ).json()["entries"]
    assert [e["action"] for e in entries] == ["key.replace", "key.set"]
    # The second writer saw the first writer's key: the chain of fingerprints is unbroken.
    assert entries[0]["before"]["fingerprint"] == entries[1]["after"]["fingerprint"]
    winner = xai_status(client, tokens.acme)
    assert winner["fingerprint"] == entries[0]["after"]["fingerprint"]
    assert winner["last4"] in {XAI_KEY[-4:], XAI_KEY_2[-4:]}


def test_verification_against_xai(client: TestClient, tokens: Tokens, fake_xai: FakeXAI) -> None:
    client.app.state.settings.xai_base_url = fake_xai.base_url  # type: ignore[attr-defined]
    fake_xai.state.accepted_keys.add(XAI_KEY)
    ok = client.put(
        KEYS.format("acme") + "?verify=true",
        json={"xai_api_key": XAI_KEY},
        headers=auth(tokens.acme),
    )
    assert ok.status_code == 200
    assert ok.json()["verification"] == [
        {"provider": "xai", "result": "valid", "detail": "xAI accepted the key"}
    ]

    rejected = client.put(
        KEYS.format("acme") + "?verify=true",
        json={"xai_api_key": XAI_KEY_2},
        headers=auth(tokens.acme),
    )
    assert rejected.status_code == 422
    assert rejected.json()["code"] == "api_key_rejected"
    assert xai_status(client, tokens.acme)["last4"] == XAI_KEY[-4:]
    assert ("GET", "/v1/api-key") in fake_xai.state.requests


def test_verification_never_blocks_when_xai_is_unreachable(
    client: TestClient, tokens: Tokens
) -> None:
    from tests.fakes.server import free_port

    client.app.state.settings.xai_base_url = f"http://127.0.0.1:{free_port()}"  # type: ignore[attr-defined]
    response = client.put(
        KEYS.format("acme") + "?verify=true",
        json={"xai_api_key": XAI_KEY},
        headers=auth(tokens.acme),
    )
    assert response.status_code == 200
    assert response.json()["verification"][0]["result"] == "unreachable"
    assert xai_status(client, tokens.acme)["configured"] is True


def test_providers_are_data(client: TestClient, tokens: Tokens) -> None:
    listed = client.get("/api/v1/key-providers", headers=auth(tokens.acme)).json()
    assert [p["id"] for p in listed] == ["openai", "telnyx", "twilio", "xai"]
    added = client.put(
        "/api/v1/key-providers/deepgram",
        json={"display_name": "Deepgram", "min_length": 32, "max_length": 64},
        headers=auth(tokens.admin),
    )
    assert added.status_code == 200
    assert put_keys(client, tokens.acme, {"deepgram_api_key": "d" * 40}).status_code == 200
    statuses = {
        k["provider"]: k["configured"]
        for k in client.get(KEYS.format("acme"), headers=auth(tokens.acme)).json()["keys"]
    }
    assert statuses == {
        "deepgram": True,
        "openai": False,
        "telnyx": False,
        "twilio": False,
        "xai": False,
    }
    assert (
        client.put(
            "/api/v1/key-providers/x", json={"display_name": "X"}, headers=auth(tokens.acme)
        ).status_code
        == 403
    )


def test_audit_is_admin_only_and_filters(client: TestClient, tokens: Tokens) -> None:
    put_keys(client, tokens.acme, {"xai_api_key": XAI_KEY})
    put_keys(client, tokens.globex, {"xai_api_key": XAI_KEY_2}, workspace="globex")
    assert client.get("/api/v1/audit", headers=auth(tokens.acme)).status_code == 403
    only_globex = client.get(
        "/api/v1/audit", params={"workspace_id": "globex"}, headers=auth(tokens.admin)
    ).json()
    assert [e["workspace_id"] for e in only_globex["entries"]] == ["globex"]
    page = client.get("/api/v1/audit", params={"limit": 1}, headers=auth(tokens.admin)).json()
    assert len(page["entries"]) == 1 and page["next_before_id"] is not None
    older = client.get(
        "/api/v1/audit",
        params={"limit": 1, "before_id": page["next_before_id"]},
        headers=auth(tokens.admin),
    ).json()
    assert older["entries"][0]["id"] < page["entries"][0]["id"]
    by_cursor = client.get(
        "/api/v1/audit",
        params={"limit": 1, "cursor": page["next_cursor"]},
        headers=auth(tokens.admin),
    ).json()
    assert by_cursor["entries"] == older["entries"]


def test_missing_master_key_stops_production_startup(tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None,
        environment="production",
        password_hash_cost="standard",  # the suite runs with cheapest (tests/conftest.py)
        database_url=f"sqlite:///{tmp_path}/x.db",
        session_secret="s" * 48,
    )  # type: ignore[call-arg]
    with pytest.raises(Exception, match="SWITCHBOARD_MASTER_KEYS"):
        create_app(settings)
    bad = Settings(
        _env_file=None,
        environment="production",
        password_hash_cost="standard",  # the suite runs with cheapest (tests/conftest.py)
        database_url=f"sqlite:///{tmp_path}/x.db",
        master_keys="k1:dG9vLXNob3J0",
        session_secret="s" * 48,
    )  # type: ignore[call-arg]
    with pytest.raises(Exception, match="32 bytes"):
        create_app(bad)


def plain_sha256(key: str) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:16]


def test_fingerprints_are_keyed_and_bound_to_their_workspace(
    client: TestClient, tokens: Tokens
) -> None:
    assert put_keys(client, tokens.admin, {"xai_api_key": XAI_KEY}, "acme").status_code == 200
    assert put_keys(client, tokens.admin, {"xai_api_key": XAI_KEY}, "globex").status_code == 200
    acme = xai_status(client, tokens.admin, "acme")["fingerprint"]
    globex = xai_status(client, tokens.admin, "globex")["fingerprint"]
    assert acme != globex  # the same key does not show as the same key across workspaces
    assert plain_sha256(XAI_KEY)[7:] not in f"{acme}{globex}"  # a candidate key cannot be tested


def test_with_plain_hashes_one_key_is_recognisable_everywhere(
    client: TestClient, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    from control_plane.keys import service as keys_service

    monkeypatch.setattr(
        keys_service, "fingerprint", lambda keyring, workspace, provider, key: plain_sha256(key)
    )
    assert put_keys(client, tokens.admin, {"xai_api_key": XAI_KEY}, "acme").status_code == 200
    assert put_keys(client, tokens.admin, {"xai_api_key": XAI_KEY}, "globex").status_code == 200
    acme = xai_status(client, tokens.admin, "acme")["fingerprint"]
    assert (
        acme == xai_status(client, tokens.admin, "globex")["fingerprint"] == plain_sha256(XAI_KEY)
    )


def test_rotation_and_migrate_recompute_fingerprints(client: TestClient, tokens: Tokens) -> None:
    import base64

    from sqlmodel import Session

    from control_plane.keys import service as keys_service
    from control_plane.keys.crypto import Keyring, generate_master_key
    from control_plane.keys.models import WorkspaceApiKey

    assert put_keys(client, tokens.acme, {"xai_api_key": XAI_KEY}).status_code == 200
    before = xai_status(client, tokens.acme)["fingerprint"]
    engine = client.app.state.engine  # type: ignore[attr-defined]
    old: Keyring = client.app.state.keyring  # type: ignore[attr-defined]
    entries = [("k2", base64.b64decode(generate_master_key()))]
    entries += [(key_id, old._keys[key_id]) for key_id in old._keys]
    rotated = Keyring(entries)
    with Session(engine) as session:
        keys_service.rotate_master(session, rotated, actor="test")
        session.commit()
        row = session.get(WorkspaceApiKey, ("acme", "xai"))
        assert row is not None and row.fingerprint not in (None, before)
        assert row.fingerprint == keys_service.fingerprint(rotated, "acme", "xai", XAI_KEY)
        # A row from before fingerprints were keyed is recomputed once.
        row.fingerprint = plain_sha256(XAI_KEY)
        session.add(row)
        session.commit()
        assert keys_service.has_unkeyed_fingerprints(session)
        assert keys_service.refresh_fingerprints(session, rotated) == 1
        assert not keys_service.has_unkeyed_fingerprints(session)


def guess_keys(client: TestClient, token: str, fake_xai: FakeXAI, guesses: int) -> list[str]:
    """Candidate keys checked with xAI through ?verify=true; the answers' codes."""
    client.app.state.settings.xai_base_url = fake_xai.base_url  # type: ignore[attr-defined]
    answers = []
    for index in range(guesses):
        response = client.put(
            KEYS.format("acme") + "?verify=true",
            json={"xai_api_key": XAI_KEY_2[:-4] + f"{index:04d}"},
            headers=auth(token),
        )
        answers.append(response.json().get("code", "ok") if response.status_code != 200 else "ok")
    return answers


def test_key_verification_is_rate_limited_per_workspace(
    client: TestClient, tokens: Tokens, fake_xai: FakeXAI
) -> None:
    answers = guess_keys(client, tokens.acme, fake_xai, 12)
    assert answers[:10] == ["api_key_rejected"] * 10
    assert answers[10:] == ["verification_rate_limited"] * 2
    refused = client.put(
        KEYS.format("acme") + "?verify=true",
        json={"xai_api_key": XAI_KEY},
        headers=auth(tokens.acme),
    )
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    # Another workspace has its own budget.
    other = client.put(
        KEYS.format("globex") + "?verify=true",
        json={"xai_api_key": XAI_KEY_2},
        headers=auth(tokens.globex),
    )
    assert other.json()["code"] == "api_key_rejected"


def test_without_the_limit_a_token_can_test_keys_without_end(
    client: TestClient, tokens: Tokens, fake_xai: FakeXAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    from control_plane.ratelimit import SlidingWindowLimit

    monkeypatch.setattr(SlidingWindowLimit, "acquire", lambda self, key: None)
    assert set(guess_keys(client, tokens.acme, fake_xai, 30)) == {"api_key_rejected"}
