"""What the control plane does by itself, every SWITCHBOARD_MAINTENANCE_INTERVAL_SECONDS: walk
the release plans (a flag advances when its milestone's gates are green) and delete transcripts
past their retention. Every replica runs it; both steps are safe to run twice."""

import asyncio
import logging
from datetime import datetime

from sqlalchemy import Engine

from control_plane.db import session_scope
from control_plane.insights import service as insights
from control_plane.outbound import OutboundPolicy
from control_plane.releases import service as releases
from control_plane.rollout.gate import FlagGate

logger = logging.getLogger(__name__)


def run_once(
    engine: Engine, gate: FlagGate, outbound: OutboundPolicy, now: datetime | None = None
) -> None:
    with session_scope(engine) as session:
        releases.check_all(session, gate, now=now, outbound=outbound)  # steps log themselves
    with session_scope(engine) as session:
        deleted = insights.purge_transcripts(session, now=now)
        if deleted:
            logger.info("deleted %d transcripts past their retention", deleted)


async def run_forever(
    interval_seconds: float, engine: Engine, gate: FlagGate, outbound: OutboundPolicy
) -> None:
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            await asyncio.to_thread(run_once, engine, gate, outbound)
        except Exception:  # a database away, say: the next round tries again
            logger.exception("maintenance failed; trying again in %s s", interval_seconds)
