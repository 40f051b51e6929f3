"""What schemathesis cannot know from the OpenAPI document, stated once and narrowly.

`positive_data_acceptance` expects every schema-valid request to be accepted. A few rules depend
on the state of the control plane or tie fields together, so no JSON Schema can state them; they
answer 422 with their own stable code. Only those codes are let through, each with its reason;
any other rejection of schema-valid data still fails the run.
"""

import os
from typing import Any

import schemathesis
from schemathesis.checks import positive_data_acceptance
from schemathesis.specs.openapi.checks import RejectedPositiveData

RULES_BEYOND_THE_SCHEMA = {
    "invalid_tier": "the tier named must exist in the catalogue (tiers are data)",
    "invalid_voice": "the voice must exist for the tier's provider (depends on the tier)",
    "unknown_workspace": "cohort members must be existing workspaces",
    "unknown_cohort": "rollouts name existing cohorts",
    "unknown_call": "telemetry is accepted for calls this control plane issued only",
    "provider_not_found": "key fields name a provider in the key-provider catalogue (data)",
    "invalid_api_key": "a key's prefix and length come from its provider's catalogue entry",
    "invalid_provider": "a key provider's min_length must not exceed its max_length",
    "invalid_call": "a webhook goes with channel twilio or telnyx (fields tied together)",
    "webhook_required": "a phone channel needs the webhook the call arrived on (tied fields)",
    "duplicate_tool_name": "tool names are unique within an agent (uniqueness by a key)",
    "invalid_cursor": "a cursor must be one this API gave out (the sort key of a row it sent)",
    "agent_too_large": "instructions and tools together stay under a byte quota (a setting)",
    "too_many_tools": "the number of tools an agent may have is a setting (the document says 64)",
    "plan_not_forward": "a release plan's milestones move forward (order across list items)",
    "empty_reference": "a reference needs a word once punctuation is gone (jiwer's reading)",
}
if os.environ.get("SWITCHBOARD_TEST_NO_RULES_BEYOND_THE_SCHEMA"):  # the test that it can fail
    RULES_BEYOND_THE_SCHEMA = {}


@schemathesis.check
def positive_data_acceptance_beyond_the_schema(ctx: Any, response: Any, case: Any) -> bool | None:
    try:
        return positive_data_acceptance(ctx, response, case)
    except RejectedPositiveData:
        if response.status_code == 422 and _code(response) in RULES_BEYOND_THE_SCHEMA:
            return None
        raise


def _code(response: Any) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("code") if isinstance(body, dict) else None
