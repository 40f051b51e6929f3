"""Cursor pagination for every list: `limit`, `cursor`, `next_cursor`, a stable order.

A cursor is the sort key of the last row sent (keyset pagination): pages stay consistent while
rows are added or removed, and every page costs the same however deep it is. Cursors are opaque
to clients (base64url JSON).
"""

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import Query
from sqlalchemy import tuple_
from sqlmodel import Session
from sqlmodel.sql.expression import SelectOfScalar

from control_plane.errors import InvalidInputError

DEFAULT_LIMIT = 100
MAX_LIMIT = 500

LimitQuery = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Rows per page")]
# An empty `?cursor=` is the first page (`page` reads "" as no cursor; FastAPI versions differ on
# whether an empty optional query value arrives as None or "").
CursorQuery = Annotated[
    str | None,
    Query(max_length=512, pattern=r"^[A-Za-z0-9_-]*$", description="next_cursor of the last page"),
]

Row = TypeVar("Row")


def encode_cursor(values: Sequence[Any]) -> str:
    plain = [v.isoformat() if isinstance(v, datetime) else v for v in values]
    return base64.urlsafe_b64encode(json.dumps(plain).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, kinds: Sequence[type]) -> list[Any]:
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(values, list) or len(values) != len(kinds):
            raise ValueError
        return [
            datetime.fromisoformat(v) if kind is datetime else kind(v)
            for v, kind in zip(values, kinds, strict=True)
        ]
    except (ValueError, TypeError, binascii.Error, json.JSONDecodeError):
        raise InvalidInputError(
            "The cursor is not one this API gave out; start again without it.",
            code="invalid_cursor",
        ) from None


def page(
    session: Session,
    query: SelectOfScalar[Row],
    order: Sequence[Any],
    kinds: Sequence[type],
    limit: int,
    cursor: str | None,
    *,
    newest_first: bool = False,
) -> tuple[list[Row], str | None]:
    """One page of `query` in `order` (columns ending in a unique one) after `cursor`."""
    if cursor:  # None or "" (an empty `?cursor=`): the first page
        after = tuple(decode_cursor(cursor, kinds))
        key = tuple_(*order)
        query = query.where(key < after if newest_first else key > after)
    sort = [column.desc() for column in order] if newest_first else list(order)
    rows = list(session.exec(query.order_by(*sort).limit(limit + 1)).all())
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    last = rows[-1]
    return rows, encode_cursor([getattr(last, column.key) for column in order])
