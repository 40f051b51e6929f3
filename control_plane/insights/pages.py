"""The product team's page for the seed's success metrics: adoption against 5 %, what calls
cost (and would cost on Grok), NPS against 40, transcript accuracy against 90 %."""

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse

from control_plane.auth.deps import AdminUserDep, UserPrincipalDep
from control_plane.deps import SessionDep
from control_plane.insights import service
from control_plane.insights.models import (
    ACCURACY_TARGET,
    ADOPTION_TARGET,
    NPS_TARGET,
    FeedbackRead,
    FeedbackWrite,
)
from control_plane.web.charts import line_chart
from control_plane.web.rendering import CsrfDep, render

router = APIRouter(include_in_schema=False)


@router.get("/insights", response_class=HTMLResponse)
def insights_page(
    request: Request,
    session: SessionDep,
    user: AdminUserDep,
    days: Annotated[int, Query(ge=1, le=365)] = 30,
) -> HTMLResponse:
    figures = service.summary(session, days=days)
    adoption, nps = figures["adoption"], figures["nps"]
    return render(
        request,
        "insights.html",
        user,
        days=days,
        **figures,
        targets={"adoption": ADOPTION_TARGET, "nps": NPS_TARGET, "accuracy": ACCURACY_TARGET},
        adoption_chart=line_chart(
            adoption.share_per_day,
            title="Share of new agents on grok-realtime, 30 days to each day",
            target=ADOPTION_TARGET,
            target_label="target",
            unit="%",
            scale=100,
            y_max=max(10.0, *(100 * v for _, v in adoption.share_per_day if v is not None)),
        ),
        nps_chart=line_chart(
            nps.per_week,
            title="NPS of grok-realtime calls by week",
            target=NPS_TARGET,
            y_min=-100,
            y_max=100,
        ),
    )


@router.post("/calls/{call_id}/feedback")
def rate_call_from_the_page(
    call_id: str,
    session: SessionDep,
    principal: UserPrincipalDep,
    _csrf: CsrfDep,
    score: Annotated[int, Form(ge=0, le=10)],
    comment: Annotated[str, Form(max_length=1000)] = "",
) -> JSONResponse:
    """The test-call panel's rating, for a member of the call's workspace; once per call."""
    feedback = service.record_feedback(
        session, principal, call_id, FeedbackWrite(score=score, comment=comment or None)
    )
    return JSONResponse(
        FeedbackRead.model_validate(feedback, from_attributes=True).model_dump(mode="json")
    )
