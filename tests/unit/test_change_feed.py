"""The change feed hands a committed topic to this process's subscribers once the writer's
transaction has given its connection back: subscribers read the database (the catalogue loaded
ahead of the counter, the flags reloaded), and a writer that still held its connection would
take a second one from the same pool. Writers holding the whole pool would then each wait for
another until the pool's timeout, and the subscriber would fail: a stale catalogue or flags."""

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, event, text
from sqlmodel import Session

from control_plane.changes import ChangeFeed, attach, notify
from control_plane.settings import Settings

TOPIC = "config:catalogue"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """A pool of one connection: the writer's is the only one."""
    engine = create_engine(
        f"sqlite:///{tmp_path}/feed.db", pool_size=1, max_overflow=0, pool_timeout=0.5
    )
    yield engine
    engine.dispose()


def feed_reading(engine: Engine, tmp_path: Path, seen: list[tuple[str, int]]) -> ChangeFeed:
    feed = ChangeFeed(Settings(_env_file=None, database_url=f"sqlite:///{tmp_path}/feed.db"))  # type: ignore[call-arg]

    def reads_the_database(topic: str) -> None:
        with Session(engine) as session:
            seen.append((topic, session.execute(text("SELECT 1")).scalar_one()))

    feed.subscribe(reads_the_database)
    return feed


def write(engine: Engine, feed: ChangeFeed, *, commit: bool = True) -> None:
    with Session(engine) as session:
        attach(session, feed)
        session.execute(text("CREATE TABLE IF NOT EXISTS t (x INTEGER)"))
        session.execute(text("INSERT INTO t VALUES (1)"))
        notify(session, TOPIC)
        if commit:
            session.commit()
        else:
            session.rollback()


def test_a_subscriber_reads_the_database_on_a_pool_the_writer_filled(
    engine: Engine, tmp_path: Path
) -> None:
    seen: list[tuple[str, int]] = []
    write(engine, feed_reading(engine, tmp_path, seen))
    assert seen == [(TOPIC, 1)]


def test_twin_delivered_while_the_writer_holds_its_connection_the_subscriber_fails(
    engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def deliver_at_commit(session: Session) -> None:  # as the feed did
        for feed, topic in session.info.pop("change_topics", set()):
            feed.dispatch(topic)

    seen: list[tuple[str, int]] = []
    event.listen(Session, "after_commit", deliver_at_commit, insert=True)
    try:
        with caplog.at_level(logging.ERROR, logger="control_plane.changes"):
            write(engine, feed_reading(engine, tmp_path, seen))
    finally:
        event.remove(Session, "after_commit", deliver_at_commit)
    assert seen == []
    assert [r.getMessage() for r in caplog.records] == [
        f"change subscriber failed for topic {TOPIC}"
    ]
    assert "QueuePool limit of size 1 overflow 0 reached" in str(caplog.records[0].exc_text)


def test_a_rollback_announces_nothing_and_a_savepoint_waits_for_the_outer_commit(
    engine: Engine, tmp_path: Path
) -> None:
    seen: list[tuple[str, int]] = []
    feed = feed_reading(engine, tmp_path, seen)
    write(engine, feed, commit=False)
    assert seen == []
    with Session(engine) as session:
        attach(session, feed)
        session.execute(text("CREATE TABLE IF NOT EXISTS t (x INTEGER)"))
        with session.begin_nested():
            session.execute(text("INSERT INTO t VALUES (2)"))
            notify(session, TOPIC)
        assert seen == []  # the savepoint is released, the transaction goes on
        session.commit()
    assert seen == [(TOPIC, 1)]
