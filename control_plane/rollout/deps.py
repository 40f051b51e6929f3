"""The flag gate, for routes and pages that decide what a workspace may use."""

from typing import Annotated

from fastapi import Depends, Request

from control_plane.rollout.gate import FlagGate


def get_flag_gate(request: Request) -> FlagGate:
    gate: FlagGate = request.app.state.flag_gate
    return gate


GateDep = Annotated[FlagGate, Depends(get_flag_gate)]
