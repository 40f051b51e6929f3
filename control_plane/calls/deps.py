"""What issuing and claiming calls needs beyond the database, for routes and pages."""

from typing import Annotated

from fastapi import Depends, Request

from control_plane.calls.service import CallPolicy
from control_plane.sessions.service import Resolver


def get_call_policy(request: Request) -> CallPolicy:
    policy: CallPolicy = request.app.state.call_policy
    return policy


def get_resolver(request: Request) -> Resolver:
    resolver: Resolver = request.app.state.resolver
    return resolver


CallPolicyDep = Annotated[CallPolicy, Depends(get_call_policy)]
ResolverDep = Annotated[Resolver, Depends(get_resolver)]
