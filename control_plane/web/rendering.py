"""Page plumbing: render a template for the signed-in person, CSRF tokens tied to the session,
redirects after a form, and errors shown as a page (sign-in as a redirect to /login)."""

import hmac
import secrets
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from control_plane.auth.models import User
from control_plane.errors import ForbiddenError, ProblemError
from control_plane.resources import resource_dir

TEMPLATES = Jinja2Templates(directory=resource_dir("templates"))
router = APIRouter(include_in_schema=False)


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


@router.get("/")
def index() -> Response:
    return see_other("/tiers")


def wants_page(request: Request) -> bool:
    """A person's browser asking for a page (not the API, not a machine)."""
    return not request.url.path.startswith("/api/") and "text/html" in request.headers.get(
        "accept", ""
    )


def problem_page(request: Request, exc: ProblemError) -> Response | None:
    """The error as a page for a browser; None leaves it to problem+json."""
    if not wants_page(request):
        return None
    signed_in = "session" in request.scope and request.session.get("user_id")
    return TEMPLATES.TemplateResponse(
        request,
        "error.html",
        {
            "user": {"email": "", "role": ""} if signed_in else None,
            "csrf": csrf_token(request),
            "problem": exc,
        },
        status_code=exc.status,
    )


async def sign_in_first(request: Request, _exc: Exception) -> Response:
    return see_other("/login?" + urlencode({"next": request.url.path}))
