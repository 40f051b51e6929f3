"""xAI Grok Voice Agent realtime events: what we send, and reading what comes back.

See shared/grok-realtime-protocol.md. Be tolerant in what we accept: unknown events are logged
and skipped, function calls may arrive as `response.function_call_arguments.done` or only inside
`response.done`, `conversation.created` comes before `session.updated`, `ping` comes any time.
"""

import itertools
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

_event_ids = itertools.count(1)


def _event(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, "event_id": f"evt_sb_{next(_event_ids)}", **fields})


def realtime_url(base_url: str, model: str) -> str:
    """The model rides on the query string: wss://api.x.ai/v1/realtime?model=..."""
    parts = urlsplit(base_url)
    query = "&".join(q for q in (parts.query, urlencode({"model": model})) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def session_update(session: dict[str, Any]) -> str:
    """From the resolved config's `session` block to xAI's `session.update`."""
    return _event(
        "session.update",
        session={
            "instructions": session["instructions"],
            "voice": session["voice"],
            "turn_detection": session["turn_detection"],
            "audio": {
                "input": {"format": _format(session["audio"]["input"]["format"])},
                "output": {"format": _format(session["audio"]["output"]["format"])},
            },
            "tools": session["tools"],
        },
    )


def _format(audio_format: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in audio_format.items() if v is not None}


def append_audio(payload_b64: str) -> str:
    return _event("input_audio_buffer.append", audio=payload_b64)


def function_call_output(call_id: str, output: Any) -> str:
    return _event(
        "conversation.item.create",
        item={"type": "function_call_output", "call_id": call_id, "output": json.dumps(output)},
    )


def response_create() -> str:
    return _event("response.create")


def response_cancel() -> str:
    return _event("response.cancel")


def user_text(text: str) -> str:
    return _event(
        "conversation.item.create",
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
    )


@dataclass(frozen=True)
class FunctionCall:
    call_id: str
    name: str
    arguments: str


def function_calls_in(event: dict[str, Any]) -> list[FunctionCall]:
    """Function calls carried by an event, in either of the shapes xAI has been seen to use."""
    kind = event.get("type")
    if kind == "response.function_call_arguments.done":
        if event.get("call_id") and event.get("name"):
            return [FunctionCall(event["call_id"], event["name"], event.get("arguments") or "{}")]
        return []
    if kind == "response.done":
        calls = []
        for item in (event.get("response") or {}).get("output") or []:
            if (
                isinstance(item, dict)
                and item.get("type") == "function_call"
                and item.get("call_id")
            ):
                calls.append(
                    FunctionCall(
                        item["call_id"], item.get("name", ""), item.get("arguments") or "{}"
                    )
                )
        return calls
    return []
