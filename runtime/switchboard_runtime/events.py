"""xAI Grok Voice Agent realtime events, typed: one parse table for what the server sends, and
the models of what we send.

See shared/grok-realtime-protocol.md; pipecat's `services/xai/realtime/events.py` is an
independent typed reading of the same protocol. We are tolerant in what we accept: fields the
runtime does not use are optional, extra fields are kept, an unknown event type parses as
`UnknownEvent` (skipped and counted by the session), and a frame that is not a JSON object, or an
event whose fields do not fit its type, parses as `Malformed` — never an exception.
"""

import itertools
from typing import Any, Literal, NamedTuple

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

# The runtime's client events are numbered from one counter per process (the compiled frame
# relay draws from it too: worker/frame_relay.pyx).
EVENT_ID_PREFIX = "evt_sb_"
EVENT_IDS = itertools.count(1)


def next_event_id() -> str:
    return f"{EVENT_ID_PREFIX}{next(EVENT_IDS)}"


# --- server → client --------------------------------------------------------------------------


class ServerEvent(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    event_id: str | None = None


class UnknownEvent(ServerEvent):
    """An event type this runtime does not know: logged, counted, skipped."""


class Malformed(BaseModel):
    """A frame that is not a JSON object, or an event whose fields do not fit its type."""

    why: str


class RealtimeError(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str | None = None
    code: str | None = None
    message: str = ""
    param: str | None = None
    event_id: str | None = None


class ErrorEvent(ServerEvent):
    error: RealtimeError = Field(default_factory=RealtimeError)


class ResponseInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str = ""
    status: str | None = None
    status_details: Any = None
    output: list[dict[str, Any]] = Field(default_factory=list)


class ResponseCreated(ServerEvent):
    response: ResponseInfo = Field(default_factory=ResponseInfo)


class ResponseDone(ServerEvent):
    response: ResponseInfo = Field(default_factory=ResponseInfo)


class AudioDelta(ServerEvent):
    response_id: str | None = None
    item_id: str | None = None
    delta: str


class AudioDone(ServerEvent):
    response_id: str | None = None


class AgentTranscriptDone(ServerEvent):
    response_id: str | None = None
    transcript: str = ""


class CallerTranscriptCompleted(ServerEvent):
    item_id: str | None = None
    transcript: str = ""


class SpeechStarted(ServerEvent):
    item_id: str | None = None


class SpeechStopped(ServerEvent):
    item_id: str | None = None


class OutputItemAdded(ServerEvent):
    response_id: str | None = None
    item: dict[str, Any] = Field(default_factory=dict)


class FunctionCallArgumentsDelta(ServerEvent):
    response_id: str | None = None
    call_id: str
    name: str | None = None
    delta: str = ""


class FunctionCallArgumentsDone(ServerEvent):
    response_id: str | None = None
    call_id: str
    name: str | None = None
    arguments: str | None = None


# Known events the runtime has no use for: parsed as plain ServerEvent, not counted as unknown.
PASSIVE_EVENTS = (
    "ping",
    "session.created",
    "session.updated",
    "conversation.created",
    "conversation.item.added",
    "conversation.item.created",
    "conversation.item.deleted",
    "conversation.item.truncated",
    "conversation.item.input_audio_transcription.updated",
    "input_audio_buffer.committed",
    "input_audio_buffer.cleared",
    "input_audio_buffer.timeout_triggered",
    "input_audio_buffer.dtmf_event_received",
    "response.output_item.done",
    "response.content_part.added",
    "response.content_part.done",
    "response.output_audio_transcript.delta",
    "response.output_text.delta",
    "response.text.delta",
    "rate_limits.updated",
)

SERVER_EVENTS: dict[str, type[ServerEvent]] = {
    **dict.fromkeys(PASSIVE_EVENTS, ServerEvent),
    "error": ErrorEvent,
    "response.created": ResponseCreated,
    "response.done": ResponseDone,
    "response.output_audio.delta": AudioDelta,
    "response.output_audio.done": AudioDone,
    "response.output_audio_transcript.done": AgentTranscriptDone,
    "conversation.item.input_audio_transcription.completed": CallerTranscriptCompleted,
    "input_audio_buffer.speech_started": SpeechStarted,
    "input_audio_buffer.speech_stopped": SpeechStopped,
    "response.output_item.added": OutputItemAdded,
    "response.function_call_arguments.delta": FunctionCallArgumentsDelta,
    "response.function_call_arguments.done": FunctionCallArgumentsDone,
}


AUDIO_DELTA = "response.output_audio.delta"
# Its type as it stands in the JSON text: a message without it is not read twice (once by the
# frame callback looking for audio, once more by the session's reader).
_AUDIO_DELTA_TEXT = f'"{AUDIO_DELTA}"'


class AudioChunk(NamedTuple):
    """What the relay takes from an agent audio delta."""

    delta: str  # base64, passed to the phone as it came
    response_id: str | None


def parse_audio_delta(raw: str | bytes) -> AudioChunk | None:
    """The audio of `raw` if it is an agent audio delta `AudioDelta` accepts; None for anything
    else. Checked field by field rather than through the model: this runs for every frame of
    agent audio, and the model's validation cost twice the JSON parse (a property test holds
    the two in agreement)."""
    if isinstance(raw, str) and _AUDIO_DELTA_TEXT not in raw:
        return None
    data = _event_object(raw)
    # `type() is dict`, not `isinstance(data, Malformed)`: a model's isinstance goes through
    # pydantic's metaclass, 7 % of this path.
    if type(data) is not dict or data["type"] != AUDIO_DELTA:
        return None
    delta, response_id = data.get("delta"), data.get("response_id")
    if not isinstance(delta, str) or not _text_or_none(response_id):
        return None
    if not (_text_or_none(data.get("item_id")) and _text_or_none(data.get("event_id"))):
        return None
    return AudioChunk(delta, response_id)


def _text_or_none(value: object) -> bool:
    return value is None or isinstance(value, str)


def parse_server_event(raw: str | bytes) -> ServerEvent | Malformed:
    data = _event_object(raw)
    return data if isinstance(data, Malformed) else _validated(data)


def _event_object(raw: str | bytes) -> dict[str, Any] | Malformed:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return Malformed(why="not JSON")
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        return Malformed(why="not an event object")
    return data


def _validated(data: dict[str, Any]) -> ServerEvent | Malformed:
    model = SERVER_EVENTS.get(data["type"], UnknownEvent)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        return Malformed(why=f"{data['type'][:64]}: {exc.error_count()} invalid field(s)")


# --- client → server ----------------------------------------------------------------------------


class ClientEvent(BaseModel):
    type: str
    event_id: str = Field(default_factory=next_event_id)

    def encode(self) -> str:
        return self.model_dump_json(exclude_none=True)


class SessionUpdate(ClientEvent):
    type: Literal["session.update"] = "session.update"
    session: dict[str, Any]


class InputAudioAppend(ClientEvent):
    type: Literal["input_audio_buffer.append"] = "input_audio_buffer.append"
    audio: str


class ConversationItemCreate(ClientEvent):
    type: Literal["conversation.item.create"] = "conversation.item.create"
    item: dict[str, Any]


class ResponseCreate(ClientEvent):
    type: Literal["response.create"] = "response.create"


class ResponseCancel(ClientEvent):
    type: Literal["response.cancel"] = "response.cancel"
