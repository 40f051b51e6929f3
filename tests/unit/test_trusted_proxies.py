"""X-Forwarded-For is believed only from SWITCHBOARD_TRUSTED_PROXIES (default: nobody). uvicorn
on its own believes it from 127.0.0.1, so any local client could choose the address sign-in
throttling and the per-address bounds count it under: the twin shows that."""

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import uvicorn

from switchboard_runtime.worker import serving
from switchboard_runtime.worker.settings import ServerSettings
from tests.fakes.server import free_port


async def client_address(scope: Any, receive: Any, send: Any) -> None:
    """Answers with the client address the server put in the scope."""
    if scope["type"] != "http":
        return
    body = json.dumps({"client": scope["client"][0]}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


@contextmanager
def served(**options: Any) -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(client_address, **{**options, "port": port, "log_level": "warning"})
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def seen_as(url: str) -> str:
    answer = httpx.get(url, headers={"X-Forwarded-For": "203.0.113.77"})
    return str(answer.json()["client"])


def guards_with(monkeypatch: pytest.MonkeyPatch, proxies: str) -> None:
    settings = ServerSettings(_env_file=None, trusted_proxies=proxies)  # type: ignore[call-arg]
    monkeypatch.setattr(
        serving,
        "http_guards",
        lambda: serving.HttpGuards(10.0, 31.0, 64, settings.trusted_proxy_networks),
    )


def test_a_local_client_cannot_pick_its_address_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    guards_with(monkeypatch, "")
    with served(**serving.uvicorn_options("127.0.0.1", 0)) as url:
        assert seen_as(url) == "127.0.0.1"


def test_with_uvicorns_own_default_a_local_client_picks_its_address() -> None:
    with served(host="127.0.0.1") as url:
        assert seen_as(url) == "203.0.113.77"


def test_a_listed_proxy_is_believed(monkeypatch: pytest.MonkeyPatch) -> None:
    guards_with(monkeypatch, "127.0.0.1, 10.0.0.0/8")
    with served(**serving.uvicorn_options("127.0.0.1", 0)) as url:
        assert seen_as(url) == "203.0.113.77"


def test_trusted_proxies_must_be_addresses() -> None:
    with pytest.raises(ValueError, match="IP addresses or networks"):
        ServerSettings(_env_file=None, trusted_proxies="proxy.example.com")  # type: ignore[call-arg]
