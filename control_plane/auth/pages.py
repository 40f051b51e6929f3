"""Signing in and out of the pages: argon2 passwords (hashing bounded), throttled guessing,
sessions that end for real."""

import secrets
import threading
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response

from control_plane.audit import service as audit
from control_plane.auth import service as auth_service
from control_plane.auth import throttle
from control_plane.auth.models import User
from control_plane.auth.passwords import Passwords
from control_plane.deps import SessionDep
from control_plane.web.rendering import CsrfDep, render, see_other

router = APIRouter(include_in_schema=False)


def get_password_hashing(request: Request) -> threading.BoundedSemaphore:
    hashing: threading.BoundedSemaphore = request.app.state.password_hashing
    return hashing


def get_passwords(request: Request) -> Passwords:
    passwords: Passwords = request.app.state.passwords
    return passwords


def get_throttle_policy(request: Request) -> throttle.ThrottlePolicy:
    policy: throttle.ThrottlePolicy = request.app.state.throttle_policy
    return policy


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> HTMLResponse:
    return render(request, "login.html", None)


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    session: SessionDep,
    _csrf: CsrfDep,
    hashing: Annotated[threading.BoundedSemaphore, Depends(get_password_hashing)],
    passwords: Annotated[Passwords, Depends(get_passwords)],
    policy: Annotated[throttle.ThrottlePolicy, Depends(get_throttle_policy)],
    email: Annotated[str, Form(max_length=254)],
    password: Annotated[str, Form(max_length=200)],
) -> Response:
    # The TCP peer, or what a trusted proxy says it is (SWITCHBOARD_TRUSTED_PROXIES).
    address = request.client.host if request.client else None
    keys = throttle.keys_for(email, address)
    wait = throttle.retry_after(session, keys)
    if wait is not None:
        return too_many_attempts(request, email, wait)
    if not hashing.acquire(timeout=5):
        return render(
            request,
            "login.html",
            None,
            status_code=503,
            error="Signing in is busy right now; try again in a few seconds.",
            email=email,
        )
    try:
        user = auth_service.authenticate_user(session, passwords, email, password)
    finally:
        hashing.release()
    if user is None:
        for key in throttle.record_failure(session, policy, keys):
            audit.record(session, actor="sign-in", action="auth.sign_in_locked", target=key)
        return render(
            request,
            "login.html",
            None,
            status_code=401,
            error="Email or password is wrong.",
            email=email,
        )
    throttle.record_success(session, email, address)
    now = int(time.time())
    request.session.clear()
    request.session.update({"user_id": user.id, "sv": user.session_version, "iat": now})
    request.session["seen"] = now
    request.session["csrf"] = secrets.token_urlsafe(24)  # a fresh token per sign-in
    return see_other("/tiers")


def too_many_attempts(request: Request, email: str, wait: int) -> HTMLResponse:
    response = render(
        request,
        "login.html",
        None,
        status_code=429,
        error=f"Too many failed sign-ins. Try again in {wait} s.",
        email=email,
    )
    response.headers["Retry-After"] = str(wait)
    return response


@router.post("/logout")
def logout(request: Request, session: SessionDep, _csrf: CsrfDep) -> Response:
    """Sign out everywhere: the session version moves on, so a copied cookie is dead too."""
    user_id = request.session.get("user_id")
    user = session.get(User, user_id) if isinstance(user_id, int) else None
    if user is not None and request.session.get("sv") == user.session_version:
        auth_service.end_sessions(session, user)
    request.session.clear()
    return see_other("/login")
