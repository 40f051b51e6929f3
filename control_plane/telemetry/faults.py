"""Whose fault a call's failure is, from what its report says.

A tier's rollout is a decision about the provider and our runtime, taken for every customer. A
call that failed because of the workspace's own configuration (xAI refused the key it stored,
it has no key) or because of the caller (a stream with a refused token, a hang-up before the
agent could speak) says nothing about either: it is counted for that workspace, and shown to it,
never in the tier's health, its guard or its release plan.

| fault       | counts against the tier | examples                                          |
|-------------|-------------------------|---------------------------------------------------|
| (none)      | as a call that ran      | hung up after the agent spoke; a deploy ended it  |
| `provider`  | yes                     | xAI 5xx, timeouts, errors, disconnects, 429s      |
| `runtime`   | yes                     | ours: engine mismatch, a model xAI does not know  |
| `workspace` | no                      | xAI refused the workspace's key; no key stored    |
| `caller`    | no                      | a refused stream token; hung up unanswered in 2 s |

Tool calls are split the same way inside a call: a tool that raised or timed out is the agent's
own code (`tool_calls_failed_in_tool`, the workspace's); a tool the model invented or called with
arguments that do not parse is the provider's.
"""

from typing import Literal, Protocol

from switchboard_runtime.contract import WORKER_SHUTDOWN, XAI_KEY_REFUSED

Fault = Literal["", "provider", "runtime", "workspace", "caller"]
FAULTS: tuple[Fault, ...] = ("", "provider", "runtime", "workspace", "caller")
AGAINST_THE_TIER: frozenset[str] = frozenset({"", "provider", "runtime"})

# Endings that are nobody's fault: the call ran fine until then. They count as calls, never
# as incomplete ones (a deploy must not pause a rollout).
NOBODYS_ENDINGS: frozenset[str] = frozenset({WORKER_SHUTDOWN})
WORKSPACE_ENDINGS: frozenset[str] = frozenset(
    {
        XAI_KEY_REFUSED,
        "xai_api_key_missing",  # the session config: the workspace stored no key
        "xai_api_key_rejected",  # the session config: xAI refused it minting a client secret
        "credentials_missing",
    }
)
CALLER_ENDINGS: frozenset[str] = frozenset({"stream_token_refused"})
RUNTIME_ENDINGS: frozenset[str] = frozenset({"xai_refused", "engine_mismatch", "no_handler"})
HANG_UPS: frozenset[str] = frozenset({"caller_hangup", "phone_stop"})
# A caller who hangs up this soon, before the agent's first audio, gave the agent no chance.
GAVE_UP_WITHIN_MS = 2000.0


class Reported(Protocol):
    end_reason: str
    completed: bool
    duration_ms: float
    time_to_first_audio_ms: float | None


def attribute(report: Reported) -> Fault:
    reason = report.end_reason
    if report.completed:
        unanswered = report.time_to_first_audio_ms is None
        if reason in HANG_UPS and unanswered and report.duration_ms < GAVE_UP_WITHIN_MS:
            return "caller"
        return ""
    if reason in NOBODYS_ENDINGS:
        return ""
    if reason in WORKSPACE_ENDINGS:
        return "workspace"
    if reason in CALLER_ENDINGS:
        return "caller"
    if reason in RUNTIME_ENDINGS or not reason.startswith("xai_"):
        return "runtime"
    return "provider"
