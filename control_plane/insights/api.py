"""REST for the seed's success metrics (admin reads), call ratings and reviewed transcripts."""

from typing import Annotated

from fastapi import APIRouter, Query, status

from control_plane.auth.deps import AdminDep, PrincipalDep
from control_plane.deps import SessionDep
from control_plane.insights import service
from control_plane.insights.models import (
    Accuracy,
    Adoption,
    CallTranscript,
    FeedbackRead,
    FeedbackWrite,
    Nps,
    ReferenceWrite,
    TranscriptLine,
    TranscriptRead,
    TranscriptsPurged,
    Usage,
)
from control_plane.workspaces import service as workspaces

router = APIRouter(prefix="/api/v1", tags=["insights"])
DaysQuery = Annotated[int, Query(ge=1, le=365, description="The window, in days up to now")]


@router.get("/insights/adoption", response_model=Adoption)
def get_adoption(session: SessionDep, _admin: AdminDep, days: DaysQuery = 30) -> Adoption:
    """New agents per tier per day, grok-realtime's share of them against the 5 % target,
    active agents per tier."""
    return service.adoption(session, days=days)


@router.get("/insights/usage", response_model=Usage)
def get_usage(session: SessionDep, _admin: AdminDep, days: DaysQuery = 30) -> Usage:
    """Calls, minutes and cost per tier and per workspace; what the same minutes cost on Grok."""
    return service.usage(session, days=days)


@router.get("/insights/nps", response_model=Nps)
def get_nps(session: SessionDep, _admin: AdminDep, days: DaysQuery = 30) -> Nps:
    """NPS from call ratings per tier, and for grok-realtime per cohort and week (target 40)."""
    return service.nps(session, days=days)


@router.get("/insights/accuracy", response_model=Accuracy)
def get_accuracy(session: SessionDep, _admin: AdminDep, days: DaysQuery = 30) -> Accuracy:
    """1 - word error rate of callers' transcripts against reviewers' references (target 90 %)."""
    return service.accuracy(session, days=days)


@router.post(
    "/calls/{call_id}/feedback",
    response_model=FeedbackRead,
    status_code=status.HTTP_201_CREATED,
    responses={404: {"description": "call_not_found"}, 409: {"description": "feedback_exists"}},
)
def rate_call(
    call_id: str, body: FeedbackWrite, session: SessionDep, principal: PrincipalDep
) -> FeedbackRead:
    """Rate a call 0-10 (the call backend's service token, or its workspace), once."""
    feedback = service.record_feedback(session, principal, call_id, body)
    return FeedbackRead.model_validate(feedback, from_attributes=True)


def transcript_read(transcript: CallTranscript) -> TranscriptRead:
    return TranscriptRead(
        call_id=transcript.call_id,
        workspace_id=transcript.workspace_id,
        tier=transcript.tier,
        entries=[TranscriptLine.model_validate(e) for e in transcript.entries],
        kept_until=transcript.kept_until,
        reference_text=transcript.reference_text,
        accuracy=service.transcript_accuracy(transcript),
    )


@router.get(
    "/calls/{call_id}/transcript",
    response_model=TranscriptRead,
    responses={404: {"description": "call_not_found / transcript_not_found"}},
)
def get_transcript(call_id: str, session: SessionDep, principal: PrincipalDep) -> TranscriptRead:
    """A kept transcript (its workspace opted in, and it has not expired)."""
    return transcript_read(service.get_transcript(session, principal, call_id))


@router.put(
    "/calls/{call_id}/transcript/reference",
    response_model=TranscriptRead,
    responses={404: {"description": "call_not_found / transcript_not_found"}},
)
def put_reference(
    call_id: str, body: ReferenceWrite, session: SessionDep, principal: PrincipalDep
) -> TranscriptRead:
    """What the caller really said, by a reviewer: the call's transcript accuracy follows."""
    return transcript_read(service.set_reference(session, principal, call_id, body.text))


@router.delete("/workspaces/{workspace_id}/transcripts", response_model=TranscriptsPurged)
def purge_transcripts(
    workspace_id: str, session: SessionDep, principal: PrincipalDep
) -> TranscriptsPurged:
    """Delete every transcript this workspace has kept, now."""
    workspaces.get_workspace(session, principal, workspace_id)
    return TranscriptsPurged(deleted=service.purge_transcripts(session, workspace_id=workspace_id))
