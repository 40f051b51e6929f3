"""The phone provider's webhook (`/twiml/{agent}`, `/texml/{agent}`) and the worker's answer.

The worker hands the signed webhook to the control plane, which checks the signature with the
workspace's own secret and issues the call, or refuses it: the caller hears a polite hang-up, or
busy at the call limit; a stopping worker answers 503 so the provider's fallback takes the call.
An issued call is answered with its media stream's URL and a single-use stream token (and its
xAI session is set up meanwhile: `CallRunner.warm_up`). An address whose webhooks the control
plane keeps refusing is answered 403 without asking it (`WebhookRefusalBudget`).
"""

import base64
import logging
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from xml.sax.saxutils import escape, quoteattr

from fastapi import Request, Response
from starlette.types import Send

from switchboard_runtime.client import ControlPlaneClient, ControlPlaneError, IssuedCall
from switchboard_runtime.logging import RepeatedWarnings
from switchboard_runtime.worker.bounded_body import BodyProblem
from switchboard_runtime.worker.calls import ID, CallRunner
from switchboard_runtime.worker.capacity import CallCapacity
from switchboard_runtime.worker.media_plane import MediaPlane
from switchboard_runtime.worker.settings import WorkerSettings
from switchboard_runtime.worker.webhook_budget import WebhookRefusalBudget

logger = logging.getLogger(__name__)

MAX_WEBHOOK_BYTES = 64 * 1024
SORRY = "We're sorry, this line can't take your call right now. Please try again later."


def _xml(body: str) -> Response:
    return Response(
        f'<?xml version="1.0" encoding="UTF-8"?><Response>{body}</Response>',
        media_type="application/xml",
    )


def hang_up_politely() -> Response:
    return _xml(f"<Say>{escape(SORRY)}</Say><Hangup/>")


def busy() -> Response:
    return _xml('<Reject reason="busy"/>')


def stopping() -> Response:
    """A webhook a stopping worker will not take: 503, so the phone provider's fallback URL
    or a retrying load balancer hands the call to another replica (busy would hang up)."""
    return Response(
        "this call worker is stopping\n",
        status_code=503,
        headers={"Retry-After": "1"},
        media_type="text/plain",
    )


def forbidden() -> Response:
    return Response("forbidden", status_code=403, media_type="text/plain")


async def refuse_body(warnings: RepeatedWarnings, problem: BodyProblem, send: Send) -> None:
    """A webhook body over its bounds: 403 for one too large (as for any webhook we will not
    take: the provider does not retry it), 408 for one too slow, 400 for a bad length."""
    warnings.warn(f"webhook:{problem}", "webhook refused: %s", problem)
    status = {"request_too_large": 403, "body_timeout": 408, "invalid_content_length": 400}
    body = f"{problem}\n".encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status[problem], "headers": headers})
    await send({"type": "http.response.body", "body": body})


class CallEntry:
    """Answers the webhooks; `runner` sets answered calls up warm."""

    def __init__(
        self, settings: WorkerSettings, runner: CallRunner, media_plane: MediaPlane | None
    ) -> None:
        self.runner = runner
        self.public_url = settings.worker_public_url.rstrip("/")
        self.stream_url_setting = settings.worker_stream_url
        self.media_plane = media_plane

    @property
    def stream_base(self) -> str:
        """Where media streams go: WORKER_STREAM_URL; else the media plane's port on the public
        URL's host; else the public URL (the app's own server carries the streams)."""
        if self.stream_url_setting:
            return self.stream_url_setting.rstrip("/")
        if self.media_plane is None:
            return self.public_url
        public = urlsplit(self.public_url)
        host = public.hostname or ""
        host = f"[{host}]" if ":" in host else host  # an IPv6 address
        return urlunsplit((public.scheme, f"{host}:{self.media_plane.port}", "", "", ""))

    async def twiml(self, request: Request, agent_id: str) -> Response:
        issued = await self.issue(request, agent_id, "twilio")
        if isinstance(issued, Response):
            return issued
        self.runner.warm_up(issued)
        return _xml(
            f"<Connect><Stream url={quoteattr(self.stream_url('twilio', issued.agent_id))}>"
            f'<Parameter name="stream_token" value={quoteattr(issued.stream_token)}/>'
            "</Stream></Connect>"
        )

    async def texml(self, request: Request, agent_id: str) -> Response:
        issued = await self.issue(request, agent_id, "telnyx")
        if isinstance(issued, Response):
            return issued
        self.runner.warm_up(issued)
        url = self.stream_url("telnyx", issued.agent_id, {"token": issued.stream_token})
        return _xml(f'<Connect><Stream url={quoteattr(url)} bidirectionalMode="rtp" /></Connect>')

    def stream_url(self, kind: str, agent_id: str, query: dict[str, str] | None = None) -> str:
        base = self.stream_base.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        return f"{base}/ws/{kind}/{agent_id}" + (f"?{urlencode(query)}" if query else "")

    async def issue(self, request: Request, agent_id: str, provider: str) -> IssuedCall | Response:
        """Hand the signed webhook to the control plane; a Response when the call is refused."""
        workspace_id = request.query_params.get("workspace_id", "")
        warnings: RepeatedWarnings = request.app.state.refusals
        if not ID.fullmatch(agent_id) or not ID.fullmatch(workspace_id):
            warnings.warn(
                "webhook:malformed_ids",
                "%s webhook refused: malformed agent or workspace id",
                provider,
            )
            return forbidden()
        address = request.client.host if request.client else ""
        budget: WebhookRefusalBudget = request.app.state.webhook_budget
        if not budget.allows(address):
            warnings.warn(
                "webhook:address_refused_too_often",
                "%s webhook from %s refused without asking: %d refused this minute",
                provider,
                address,
                budget.per_minute,
            )
            return forbidden()
        raw = await request.body()  # at most MAX_WEBHOOK_BYTES, in time (BoundedBody)
        # The URL the provider requested: our public URL, this path, this query string.
        query = f"?{request.url.query}" if request.url.query else ""
        url = self.public_url + request.url.path + query
        params = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        webhook: dict[str, Any]
        if provider == "twilio":
            webhook = {
                "provider": "twilio",
                "url": url,
                "params": params,
                "signature": request.headers.get("x-twilio-signature", ""),
            }
        else:
            webhook = {
                "provider": "telnyx",
                "body_base64": base64.b64encode(raw).decode("ascii"),
                "timestamp": request.headers.get("telnyx-timestamp", ""),
                "signature": request.headers.get("telnyx-signature-ed25519", ""),
            }
        control_plane: ControlPlaneClient = request.app.state.control_plane
        capacity: CallCapacity = request.app.state.capacity
        with capacity.taken() as admitted:
            if not admitted and capacity.stopping:
                logger.info("%s call refused: worker stopping", provider)
                return stopping()
            if not admitted:
                warnings.warn(
                    "webhook:at_capacity", "%s call refused: worker at capacity", provider
                )
                return busy()
            try:
                issued = await control_plane.issue_call(
                    workspace_id,
                    agent_id,
                    channel=provider,
                    provider_call_id=params.get("CallSid") or params.get("CallControlId"),
                    webhook=webhook,
                )
            except ControlPlaneError as exc:
                warnings.warn(
                    f"issue:{exc.code}",
                    "%s call for %s/%s refused: %s (%s)",
                    provider,
                    workspace_id,
                    agent_id,
                    exc.code,
                    exc.message,
                )
                if exc.code.startswith("webhook_") or exc.status == 422:
                    budget.refused(address)
                    return forbidden()
                if exc.status == 429:
                    return busy()
                return hang_up_politely()
            budget.accepted(address)
            capacity.hold(issued.call_id)  # its place waits for the stream
            return issued
