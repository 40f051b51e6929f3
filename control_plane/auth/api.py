"""REST for machine tokens (admin): issue, list, revoke. A token is shown once, at creation."""

from fastapi import APIRouter, Response, status

from control_plane.auth import service
from control_plane.auth.deps import AdminDep
from control_plane.auth.models import TokenCreate, TokenCreated, TokenList, TokenRead
from control_plane.deps import SessionDep
from control_plane.pagination import DEFAULT_LIMIT, CursorQuery, LimitQuery

router = APIRouter(prefix="/api/v1/tokens", tags=["tokens"])


@router.post("", response_model=TokenCreated, status_code=status.HTTP_201_CREATED)
def create_token(body: TokenCreate, session: SessionDep, _admin: AdminDep) -> TokenCreated:
    row, token = service.create_token(session, name=body.name, scopes=body.scopes)
    return TokenCreated(
        **TokenRead.model_validate(row, from_attributes=True).model_dump(), token=token
    )


@router.get("", response_model=TokenList)
def list_tokens(
    session: SessionDep,
    _admin: AdminDep,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> TokenList:
    rows, next_cursor = service.list_tokens(session, limit, cursor)
    return TokenList(
        tokens=[TokenRead.model_validate(row, from_attributes=True) for row in rows],
        next_cursor=next_cursor,
    )


@router.delete("/{token_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def revoke_token(token_id: int, session: SessionDep, _admin: AdminDep) -> Response:
    service.revoke_token(session, token_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
