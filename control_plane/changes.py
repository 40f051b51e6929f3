"""Change notifications: tell every process when flags or session configs changed.

A write calls `notify(session, topic)` (or `feed.publish`); the request's session carries the
feed in `session.info`, so services need no handle on it and a session without one (a script)
simply notifies nobody. Subscribers in this process run after the transaction commits (never
for a rollback), once it has given its connection back to the pool. On PostgreSQL the same
topic also goes out with NOTIFY, which is transactional too, and a listener thread in every
other process hands it to its subscribers; when that connection drops it reconnects and sends
the topic "resync", since notifications may have been missed. SQLite has no cross-process
channel: run one process per SQLite file.
"""

import logging
import threading
from collections.abc import Callable

import psycopg
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import SessionTransaction
from sqlmodel import Session

from control_plane.settings import Settings

logger = logging.getLogger(__name__)

CHANNEL = "switchboard_changes"
RESYNC = "resync"
Subscriber = Callable[[str], None]


class ChangeFeed:
    def __init__(self, settings: Settings) -> None:
        self._notify = not settings.is_sqlite
        self._database_url = settings.database_url
        self._subscribers: list[Subscriber] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.listening = threading.Event()

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def publish(self, session: Session, topic: str) -> None:
        pending: set[tuple[ChangeFeed, str]] = session.info.setdefault("change_topics", set())
        if (self, topic) in pending:
            return
        pending.add((self, topic))
        if self._notify:
            session.execute(
                text("SELECT pg_notify(:channel, :topic)"), {"channel": CHANNEL, "topic": topic}
            )

    def dispatch(self, topic: str) -> None:
        for subscriber in self._subscribers:
            try:
                subscriber(topic)
            except Exception:
                logger.exception("change subscriber failed for topic %s", topic)

    # --- PostgreSQL listener ----------------------------------------------------------------

    def start(self) -> None:
        if not self._notify or self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._listen_forever, name="change-feed", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _conninfo(self) -> str:
        return (
            make_url(self._database_url)
            .set(drivername="postgresql")
            .render_as_string(hide_password=False)
        )

    def _listen_forever(self) -> None:
        backoff = 0.2
        first = True
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self._conninfo(), autocommit=True, connect_timeout=3
                ) as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    if not first:
                        self.dispatch(RESYNC)
                    first, backoff = False, 0.2
                    while not self._stop.is_set():
                        for notification in connection.notifies(timeout=0.1):
                            self.dispatch(notification.payload)
            except psycopg.Error as exc:
                if self.listening.is_set():
                    # Changes may be missed from here on: drop what is cached now, and only
                    # then say the feed stopped listening (whoever waits for that, as the
                    # outage test does, then finds nothing kept from before).
                    self.dispatch(RESYNC)
                    self.listening.clear()
                logger.warning(
                    "change feed disconnected (%s); retrying in %.1fs", type(exc).__name__, backoff
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)


FEED_KEY = "change_feed"


def attach(session: Session, feed: ChangeFeed) -> Session:
    session.info[FEED_KEY] = feed
    return session


def notify(session: Session, topic: str) -> None:
    """Announce, once this transaction commits, that `topic` changed."""
    feed: ChangeFeed | None = session.info.get(FEED_KEY)
    if feed is not None:
        feed.publish(session, topic)


@event.listens_for(Session, "after_commit")
def _hold_after_commit(session: Session) -> None:
    # The session still holds its connection here; subscribers that read the database (the
    # catalogue loaded ahead, the flags reloaded) would take a second one from the same pool,
    # and writers holding the whole pool would each wait for another forever (until the pool's
    # timeout). So the topics wait until the transaction has given its connection back.
    pending: set[tuple[ChangeFeed, str]] = session.info.pop("change_topics", set())
    if pending:
        session.info.setdefault("committed_topics", set()).update(pending)


@event.listens_for(Session, "after_transaction_end")
def _deliver_once_released(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is not None:  # a savepoint: the commit is the outer transaction's
        return
    committed: set[tuple[ChangeFeed, str]] = session.info.pop("committed_topics", set())
    for feed, topic in sorted(committed, key=lambda item: item[1]):
        feed.dispatch(topic)


@event.listens_for(Session, "after_rollback")
def _drop_after_rollback(session: Session) -> None:
    session.info.pop("change_topics", None)
