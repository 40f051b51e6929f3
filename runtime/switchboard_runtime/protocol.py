"""What the runtime says to xAI's realtime API, built from the typed events in `events.py`, and
the function calls it reads back.

Function calls may arrive as `response.function_call_arguments.done`, with their arguments
streamed before as `.delta` events, or only inside `response.done`'s output list.
"""

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from switchboard_runtime import events


def realtime_url(base_url: str, model: str) -> str:
    """The model rides on the query string: wss://api.x.ai/v1/realtime?model=..."""
    parts = urlsplit(base_url)
    query = "&".join(q for q in (parts.query, urlencode({"model": model})) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def session_update(session: dict[str, Any]) -> str:
    """From the resolved config's `session` block to xAI's `session.update`."""
    return events.SessionUpdate(
        session={
            "instructions": session["instructions"],
            "voice": session["voice"],
            "turn_detection": session["turn_detection"],
            "audio": {
                "input": {"format": _format(session["audio"]["input"]["format"])},
                "output": {"format": _format(session["audio"]["output"]["format"])},
            },
            "tools": session["tools"],
        }
    ).encode()


def _format(audio_format: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in audio_format.items() if v is not None}


# JSON string literal of a str, the C encoder `json.dumps` uses for strings.
json_string = json.encoder.encode_basestring


def append_audio(payload_b64: str) -> str:
    """`InputAudioAppend(audio=...).encode()`, written out: this goes to xAI 50 times a second
    per call, and building and dumping the model costs about four times as much as this
    template (a unit test holds the two encodings equal)."""
    return (
        f'{{"type":"input_audio_buffer.append","event_id":"{events.next_event_id()}",'
        f'"audio":{json_string(payload_b64)}}}'
    )


def function_call_output(call_id: str, output: Any) -> str:
    return events.ConversationItemCreate(
        item={"type": "function_call_output", "call_id": call_id, "output": json.dumps(output)}
    ).encode()


def response_create() -> str:
    return events.ResponseCreate().encode()


def response_cancel() -> str:
    return events.ResponseCancel().encode()


def user_text(text: str) -> str:
    return events.ConversationItemCreate(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    ).encode()


@dataclass(frozen=True)
class FunctionCall:
    call_id: str
    name: str
    arguments: str
    response_id: str | None = None


def function_calls_in(event: events.ServerEvent) -> list[FunctionCall]:
    """Function calls carried by a `response.done`'s output list."""
    if not isinstance(event, events.ResponseDone):
        return []
    return [
        FunctionCall(
            str(item["call_id"]),
            str(item.get("name") or ""),
            str(item.get("arguments") or "{}"),
            event.response.id or None,
        )
        for item in event.response.output
        if item.get("type") == "function_call" and item.get("call_id")
    ]
