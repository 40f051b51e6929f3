"""The catalogue as the frontend reads it, kept as Served answers, one per variant.

A variant is what was asked (the tier list, one tier, voices, a voice map), for whom (anonymous,
or a workspace whose availability it shows) and with which cache policy. An answer is served
while the catalogue and the flags it was built from are current (its stamp, `kept.py`).
Availability comes from the flag gate, never the database. When the database is unreachable,
the last answer built for a variant is served, marked stale.
"""

from collections.abc import Callable
from typing import Any

from fastapi import Request, Response
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlmodel import Session

from control_plane.auth.principal import Principal
from control_plane.catalogue.snapshot import CatalogueData, CatalogueSnapshot
from control_plane.db import end_read_only
from control_plane.errors import NotFoundError
from control_plane.kept import Generations, StampedMap
from control_plane.served import Served, served_response

# Browsers and CDNs may keep the public catalogue for 30 s and serve it for 5 minutes more while
# they revalidate; a workspace's view (availability) is private to its holder.
PUBLIC_CACHE = "public, max-age=30, stale-while-revalidate=300"
PRIVATE_CACHE = "private, max-age=0, must-revalidate"

# (what, which: a tier id or provider, workspace whose view, private)
ReadKey = tuple[str, str | None, str | None, bool]


def workspace_context(principal: Principal | None, workspace_id: str | None) -> str | None:
    """Whose view of the catalogue: ?workspace_id=, or the caller's only workspace."""
    if principal is None:
        return None
    if workspace_id is not None:
        if not principal.can_access_workspace(workspace_id):
            raise NotFoundError(
                f"Workspace '{workspace_id}' not found.", code="workspace_not_found"
            )
        return workspace_id
    if len(principal.workspace_ids) == 1 and not principal.is_admin:
        return next(iter(principal.workspace_ids))
    return None


class CatalogueReads:
    def __init__(
        self, snapshot: CatalogueSnapshot, generations: Generations, max_entries: int = 10_000
    ) -> None:
        self.snapshot = snapshot
        self.generations = generations
        self._answers: StampedMap[ReadKey, Served] = StampedMap(max_entries)

    def cached(self, key: ReadKey) -> Served | None:
        """The answer, if it was built from the catalogue and flags in force now."""
        return self._answers.get(key, self.generations.catalogue_and_flags())

    def respond(
        self,
        request: Request,
        session: Session,
        key: ReadKey,
        render: Callable[[CatalogueData], bytes],
    ) -> Response:
        """Serve the variant, building it on a miss; the last known answer if the database is
        away; NotFoundError from `render` goes to the caller as it is."""
        served = self.cached(key)
        if served is not None:
            return served_response(request, served)
        try:
            served = self._build(session, key, render)
        except (OperationalError, PoolTimeoutError):
            last = self._answers.last(key)
            if last is None:
                raise
            end_read_only(session)
            return served_response(request, last, stale=True)
        return served_response(request, served)

    def _build(
        self, session: Session, key: ReadKey, render: Callable[[CatalogueData], bytes]
    ) -> Served:
        stamp = self.generations.catalogue_and_flags()  # before building: see kept.py
        data = self.snapshot.get(session)
        private = key[3]
        served = Served.of(
            render(data), PRIVATE_CACHE if private else PUBLIC_CACHE, vary="Authorization"
        )
        self._answers.put(key, served, stamp)
        return served


def sorted_tiers(data: CatalogueData) -> list[Any]:
    return sorted(data.tiers.values(), key=lambda tier: (tier.sort_order, tier.id))
