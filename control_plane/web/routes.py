"""Pages for people: sign-in, tier catalogue, workspace API keys, agents, rollout console.

Routes only; markup lives in templates/. Pages call the same services as the REST API, as the
signed-in person (a Principal built from the session cookie), so isolation and validation are
the same. Every form carries a CSRF token tied to the session.
"""

import hmac
import secrets
import threading
import time
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlmodel import Session

from control_plane.audit import service as audit
from control_plane.auth import service as auth_service
from control_plane.auth import throttle
from control_plane.auth.models import User
from control_plane.auth.principal import Principal
from control_plane.catalogue import service as catalogue
from control_plane.deps import GateDep, SessionDep, get_session
from control_plane.errors import ForbiddenError, ProblemError
from control_plane.keys import service as keys
from control_plane.resources import resource_dir
from control_plane.rollout import service as rollout
from control_plane.rollout.gate import FlagGate
from control_plane.rollout.models import STAGES, CohortWrite, RolloutChange
from control_plane.settings import Settings
from control_plane.telemetry import service as telemetry
from control_plane.workspaces import service as workspaces
from control_plane.workspaces.models import AgentCreate, AgentPatch

TEMPLATES = Jinja2Templates(directory=resource_dir("templates"))
router = APIRouter(include_in_schema=False)


class SignInRequired(Exception):
    """Raised by page dependencies; app.py turns it into a redirect to /login."""


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(24)
    return str(token)


def check_csrf(request: Request, csrf: Annotated[str, Form()] = "") -> None:
    expected = request.session.get("csrf", "")
    if not expected or not hmac.compare_digest(str(expected), csrf):
        raise ForbiddenError(
            "The form expired or did not come from this site; reload and retry.", code="csrf_failed"
        )


CsrfDep = Annotated[None, Depends(check_csrf)]


def current_user(request: Request, session: Annotated[Session, Depends(get_session)]) -> User:
    """The signed-in user, if the cookie's session is still alive: issued for the user's current
    session version (not signed out since, password unchanged), within the absolute lifetime,
    and used within the idle lifetime."""
    cookie = request.session
    user_id = cookie.get("user_id")
    user = session.get(User, user_id) if isinstance(user_id, int) else None
    settings: Settings = request.app.state.settings
    now = int(time.time())
    if (
        user is None
        or cookie.get("sv") != user.session_version
        or now - int(cookie.get("iat", 0)) > settings.session_absolute_hours * 3600
        or now - int(cookie.get("seen", 0)) > settings.session_idle_minutes * 60
    ):
        cookie.clear()
        raise SignInRequired
    if now - int(cookie["seen"]) >= 60:  # a fresh cookie at most once a minute
        cookie["seen"] = now
    return user


UserDep = Annotated[User, Depends(current_user)]


def render(
    request: Request, template: str, user: User | None, status_code: int = 200, **context: Any
) -> HTMLResponse:
    return TEMPLATES.TemplateResponse(
        request,
        template,
        {"user": user, "csrf": csrf_token(request), **context},
        status_code=status_code,
    )


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def home_workspace(user: User, requested: str | None) -> str | None:
    return requested or user.workspace_id


# --- sign-in --------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> HTMLResponse:
    return render(request, "login.html", None)


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    session: SessionDep,
    _csrf: CsrfDep,
    email: Annotated[str, Form(max_length=254)],
    password: Annotated[str, Form(max_length=200)],
) -> Response:
    keys = throttle.keys_for(email, request.client.host if request.client else None)
    wait = throttle.retry_after(session, keys)
    if wait is not None:
        return too_many_attempts(request, email, wait)
    hashing: threading.BoundedSemaphore = request.app.state.password_hashing
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
        user = auth_service.authenticate_user(session, email, password)
    finally:
        hashing.release()
    if user is None:
        policy: throttle.ThrottlePolicy = request.app.state.throttle_policy
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
    throttle.record_success(session, email)
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


@router.get("/")
def index() -> Response:
    return see_other("/tiers")


# --- catalogue ------------------------------------------------------------------------------


def tier_cards(session: Session, gate: FlagGate, workspace_id: str | None) -> list[dict[str, Any]]:
    cards = []
    for tier in catalogue.list_tiers(session):
        card: dict[str, Any] = {
            "tier": tier,
            "voices": catalogue.voice_names(session, tier.voice_provider),
            "available": True,
            "reason": None,
        }
        if workspace_id and tier.flag_name:
            decision = gate.decide(tier.flag_name, workspace_id, subject=tier.name)
            card["available"], card["reason"] = decision.enabled, decision.reason
        cards.append(card)
    return cards


@router.get("/tiers", response_class=HTMLResponse)
def tiers_page(
    request: Request,
    session: SessionDep,
    gate: GateDep,
    user: UserDep,
    workspace_id: str | None = None,
) -> HTMLResponse:
    principal = auth_service.principal_for_user(user)
    workspace = home_workspace(user, workspace_id)
    if workspace:
        workspaces.get_workspace(session, principal, workspace)
    return render(
        request,
        "tiers.html",
        user,
        cards=tier_cards(session, gate, workspace),
        workspace_id=workspace,
        workspaces=workspaces.list_workspaces(session, principal)[0],
    )


# --- workspace API keys ---------------------------------------------------------------------


def keys_page(
    request: Request,
    session: Session,
    user: User,
    workspace_id: str,
    *,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    principal = auth_service.principal_for_user(user)
    statuses = keys.status(session, principal, workspace_id)
    return render(
        request,
        "api_keys.html",
        user,
        status_code=status_code,
        workspace_id=workspace_id,
        statuses=statuses,
        **context,
    )


@router.get("/workspaces/{workspace_id}/settings/api-keys", response_class=HTMLResponse)
def api_keys_page(
    request: Request, workspace_id: str, session: SessionDep, user: UserDep
) -> HTMLResponse:
    return keys_page(request, session, user, workspace_id)


@router.post("/workspaces/{workspace_id}/settings/api-keys", response_class=HTMLResponse)
def api_keys_save(
    request: Request,
    workspace_id: str,
    session: SessionDep,
    user: UserDep,
    _csrf: CsrfDep,
    provider: Annotated[str, Form(max_length=32)] = "xai",
    api_key: Annotated[str, Form(max_length=1024)] = "",
    action: Annotated[str, Form(max_length=16)] = "save",
) -> Response:
    principal = auth_service.principal_for_user(user)
    try:
        value = None if action == "remove" else api_key
        changes = keys.plan_changes(session, {f"{provider}{keys.FIELD_SUFFIX}": value})
        keys.apply_changes(session, request.app.state.keyring, principal, workspace_id, changes)
    except ProblemError as exc:
        if exc.status != 422:
            raise
        # Never rendered back: the field comes back empty, with the reason beside it.
        return keys_page(
            request, session, user, workspace_id, status_code=422, errors={provider: exc.detail}
        )
    return see_other(f"/workspaces/{workspace_id}/settings/api-keys?saved={provider}")


# --- agents ---------------------------------------------------------------------------------


def agent_form_context(
    session: Session, gate: FlagGate, principal: Principal, workspace_id: str
) -> dict[str, Any]:
    voice_map, entries = catalogue.get_voice_map(session, "grok")
    has_keys = {s.provider: s.configured for s in keys.status(session, principal, workspace_id)}
    return {
        "cards": tier_cards(session, gate, workspace_id),
        "voices": {p: catalogue.voice_names(session, p) for p in ("openai", "grok")},
        "voice_map": {"default": voice_map.default_voice, "entries": entries},
        "has_xai_key": has_keys.get("xai", False),
        "workspace_id": workspace_id,
    }


@router.get("/workspaces/{workspace_id}/agents", response_class=HTMLResponse)
def agents_page(
    request: Request, workspace_id: str, session: SessionDep, user: UserDep
) -> HTMLResponse:
    principal = auth_service.principal_for_user(user)
    agents = [
        workspaces.agent_read(session, a)
        for a in workspaces.list_agents(session, principal, workspace_id)[0]
    ]
    return render(request, "agents.html", user, agents=agents, workspace_id=workspace_id)


@router.get("/workspaces/{workspace_id}/agents/new", response_class=HTMLResponse)
@router.get("/workspaces/{workspace_id}/agents/{agent_id}/edit", response_class=HTMLResponse)
def agent_form(
    request: Request,
    workspace_id: str,
    session: SessionDep,
    gate: GateDep,
    user: UserDep,
    agent_id: str | None = None,
) -> HTMLResponse:
    principal = auth_service.principal_for_user(user)
    agent = workspaces.get_agent(session, principal, workspace_id, agent_id) if agent_id else None
    return render(
        request,
        "agent_form.html",
        user,
        agent=agent,
        **agent_form_context(session, gate, principal, workspace_id),
    )


@router.post("/workspaces/{workspace_id}/agents", response_class=HTMLResponse)
@router.post("/workspaces/{workspace_id}/agents/{agent_id}", response_class=HTMLResponse)
def agent_save(
    request: Request,
    workspace_id: str,
    session: SessionDep,
    gate: GateDep,
    user: UserDep,
    _csrf: CsrfDep,
    name: Annotated[str, Form(max_length=200)],
    pricing_tier: Annotated[str, Form(max_length=64)],
    voice: Annotated[str, Form(max_length=64)],
    instructions: Annotated[str, Form(max_length=20_000)] = "",
    language: Annotated[str, Form(max_length=32)] = "en",
    agent_id: str | None = None,
) -> Response:
    principal = auth_service.principal_for_user(user)
    fields = {
        "name": name,
        "pricing_tier": pricing_tier,
        "voice": voice,
        "instructions": instructions,
        "language": language,
    }
    try:
        card = next(
            (c for c in tier_cards(session, gate, workspace_id) if c["tier"].id == pricing_tier),
            None,
        )
        if card is not None and not card["available"]:
            raise ProblemError(
                card["reason"] or "This tier is not enabled for this workspace.",
                status=422,
                code="tier_not_enabled",
            )
        limits = workspaces.agent_limits(request.app.state.settings)
        if agent_id:
            patch = AgentPatch.model_validate(fields)
            workspaces.update_agent(session, principal, workspace_id, agent_id, patch, limits)
        else:
            body = AgentCreate.model_validate(fields)
            workspaces.create_agent(session, principal, workspace_id, body, limits)
    except (ProblemError, ValueError) as exc:
        if isinstance(exc, ProblemError) and exc.status != 422:
            raise
        message = (
            exc.detail
            if isinstance(exc, ProblemError)
            else "Check the fields: " + str(exc).split("\n")[0]
        )
        session.rollback()
        return render(
            request,
            "agent_form.html",
            user,
            status_code=422,
            error=message,
            agent=None,
            submitted=fields,
            **agent_form_context(session, gate, principal, workspace_id),
        )
    return see_other(f"/workspaces/{workspace_id}/agents")


# --- rollout console ------------------------------------------------------------------------


def require_admin_user(user: UserDep) -> User:
    if user.role != "admin":
        raise ForbiddenError("The rollout console is for product admins.", code="admin_required")
    return user


AdminUserDep = Annotated[User, Depends(require_admin_user)]


@router.get("/rollout", response_class=HTMLResponse)
def rollout_page(
    request: Request,
    session: SessionDep,
    user: AdminUserDep,
    action: str | None = None,
    actor: str | None = None,
    target: str | None = None,
    workspace: str | None = None,
) -> HTMLResponse:
    flags = []
    for flag in rollout.list_flags(session):
        flags.append(
            {
                "flag": flag,
                "health": telemetry.health(session, flag.name),
                "guard": telemetry.get_guard(session, flag.name),
            }
        )
    entries = audit.list_entries(
        session,
        action=action or None,
        actor=actor or None,
        target=target or None,
        workspace_id=workspace or None,
        limit=50,
    )
    return render(
        request,
        "rollout.html",
        user,
        flags=flags,
        stages=STAGES,
        cohorts=rollout.list_cohorts(session),
        entries=entries,
        filters={
            "action": action or "",
            "actor": actor or "",
            "target": target or "",
            "workspace": workspace or "",
        },
    )


def _rollout_done(message: str) -> Response:
    return see_other("/rollout?" + urlencode({"done": message}))


@router.post("/rollout/flags/{name}/stage")
def rollout_stage(
    name: str,
    session: SessionDep,
    gate: GateDep,
    user: AdminUserDep,
    _csrf: CsrfDep,
    stage: Annotated[str, Form()],
) -> Response:
    rollout.set_stage(session, gate, name, stage, actor=f"user:{user.email}")
    return _rollout_done(f"{name} moved to {stage}")


@router.post("/rollout/flags/{name}/percentage")
def rollout_percentage(
    name: str,
    session: SessionDep,
    gate: GateDep,
    user: AdminUserDep,
    _csrf: CsrfDep,
    percentage: Annotated[int, Form(ge=0, le=100)],
) -> Response:
    rollout.set_rollout(
        session, gate, name, RolloutChange(percentage=percentage), actor=f"user:{user.email}"
    )
    return _rollout_done(f"{name}: beta percentage {percentage}%")


@router.post("/rollout/flags/{name}/kill")
def rollout_kill(
    name: str,
    session: SessionDep,
    gate: GateDep,
    user: AdminUserDep,
    _csrf: CsrfDep,
    confirm: Annotated[str, Form()] = "",
    reason: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    if confirm != "yes":
        raise ProblemError(
            "Tick the confirmation to use the kill switch.",
            status=422,
            code="confirmation_required",
        )
    rollout.kill(session, gate, name, actor=f"user:{user.email}", reason=reason or None)
    return _rollout_done(f"{name} killed")


@router.post("/rollout/flags/{name}/resume")
def rollout_resume(
    name: str, session: SessionDep, gate: GateDep, user: AdminUserDep, _csrf: CsrfDep
) -> Response:
    rollout.resume(session, gate, name, actor=f"user:{user.email}")
    return _rollout_done(f"{name} resumed")


@router.post("/rollout/cohorts/{name}")
def rollout_cohort(
    name: str,
    session: SessionDep,
    gate: GateDep,
    user: AdminUserDep,
    _csrf: CsrfDep,
    members: Annotated[str, Form(max_length=100_000)] = "",
) -> Response:
    workspace_ids = [m.strip() for m in members.replace(",", "\n").splitlines() if m.strip()]
    rollout.put_cohort(
        session, gate, name, CohortWrite(members=workspace_ids), actor=f"user:{user.email}"
    )
    return _rollout_done(f"cohort {name} saved")


def install_page_errors(app: FastAPI) -> None:
    """Pages answer errors with a page (and sign-in with a redirect); the API keeps problem+json."""
    from control_plane.errors import problem_for

    @app.exception_handler(SignInRequired)
    async def sign_in(request: Request, _exc: SignInRequired) -> Response:
        return see_other("/login?" + urlencode({"next": request.url.path}))

    @app.exception_handler(ProblemError)
    async def problem(request: Request, exc: ProblemError) -> Response:
        if request.url.path.startswith("/api/") or "text/html" not in request.headers.get(
            "accept", ""
        ):
            return problem_for(request, exc)
        user_id = request.session.get("user_id") if "session" in request.scope else None
        return TEMPLATES.TemplateResponse(
            request,
            "error.html",
            {
                "user": {"email": "", "role": ""} if user_id else None,
                "csrf": csrf_token(request),
                "problem": exc,
            },
            status_code=exc.status,
        )
