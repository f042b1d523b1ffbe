"""SnapshotCache: exact when no staleness is allowed, bounded work when it is."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import URL, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from service.db import Database
from service.snapshots import FRESH_SHARE, SnapshotCache


@pytest.fixture
def database(db_url: URL) -> Iterator[Database]:
    engine = create_engine(db_url)
    yield Database(engine, sessionmaker(engine, expire_on_commit=False))
    engine.dispose()


@pytest.fixture
def two_connections(db_url: URL) -> Iterator[Database]:
    """A database whose pool holds two connections and gives up waiting for one after 2 s."""
    engine = create_engine(db_url, pool_size=2, max_overflow=0, pool_timeout=2)
    yield Database(engine, sessionmaker(engine, expire_on_commit=False))
    engine.dispose()


def _add_household(database: Database) -> None:
    with database.sessions() as session, session.begin():
        session.execute(
            text(
                "INSERT INTO households (status, geom, captured_at) "
                "VALUES ('accepted', ST_SetSRID(ST_MakePoint(105.6, 10.4), 4326), now())"
            )
        )


def _count(session: Session) -> int:
    return int(session.execute(text("SELECT count(*) FROM households")).scalar_one())


class Counting:
    """A load function that counts how often it ran."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, session: Session) -> int:
        self.calls += 1
        return _count(session)


def _in_threads(*calls: Callable[[], Any]) -> list[Any]:
    """Run each call in a thread of its own; their results (or what they raised), in order."""
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except Exception as error:
            results[i] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def _age(cache: SnapshotCache[int], seconds: float) -> None:
    entry = cache._entry
    assert entry is not None
    cache._entry = dataclasses.replace(entry, loaded_at=time.monotonic() - seconds)


def test_no_staleness_allowed_reads_again_after_every_change(database: Database) -> None:
    load = Counting()
    cache = SnapshotCache(load)
    with database.sessions() as session:
        assert cache.get(database, session) == 0
        assert cache.get(database, session) == 0
        assert load.calls == 1  # unchanged tables: the value is reused
        _add_household(database)
        assert cache.get(database, session) == 1
        assert load.calls == 2


def test_a_young_value_is_served_without_reading_while_writes_go_on(database: Database) -> None:
    load = Counting()
    cache = SnapshotCache(load)
    with database.sessions() as session:
        assert cache.get(database, session, max_stale_s=30.0) == 0
        for _ in range(5):  # intake goes on: every request would find the value stale
            _add_household(database)
            assert cache.get(database, session, max_stale_s=30.0) == 0
        assert load.calls == 1
        # Older than the fresh share: checked, found stale, served, refreshed in the background.
        _age(cache, 30.0 * FRESH_SHARE + 1)
        assert cache.get(database, session, max_stale_s=30.0) == 0
        deadline = time.monotonic() + 10
        while load.calls < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert load.calls == 2
        deadline = time.monotonic() + 10
        while cache.get(database, session, max_stale_s=30.0) != 5:
            assert time.monotonic() < deadline, "the background refresh never landed"
            time.sleep(0.05)
        # Older than allowed: read again before answering.
        _add_household(database)
        _age(cache, 31.0)
        assert cache.get(database, session, max_stale_s=30.0) == 6


def test_requests_waiting_for_a_read_hold_no_connection(two_connections: Database) -> None:
    database = two_connections
    cache = SnapshotCache(Counting())
    with database.sessions() as session:
        assert cache.get(database, session) == 0
    _add_household(database)
    both_connected = threading.Barrier(2, timeout=10)

    def request() -> int:
        with database.sessions() as session:
            session.execute(text("SELECT 1"))  # the request's own work: both connections taken
            both_connected.wait()
            return cache.get(database, session)

    # The read needs a third connection: it gets one only if the requests gave theirs back.
    assert _in_threads(request, request) == [1, 1]


def test_a_request_that_waited_for_another_read_still_sees_earlier_writes(
    database: Database,
) -> None:
    reading, go_on = threading.Event(), threading.Event()

    def load(session: Session) -> int:
        count = _count(session)
        reading.set()
        go_on.wait(timeout=10)
        return count

    cache = SnapshotCache(load)

    def first() -> int:
        with database.sessions() as session:
            return cache.get(database, session)

    def second() -> int:
        assert reading.wait(timeout=10)
        _add_household(database)  # after the first read's snapshot, before this request
        with database.sessions() as session:
            return cache.get(database, session)

    def release() -> None:
        assert reading.wait(timeout=10)
        time.sleep(0.3)  # let the second request queue behind the first read
        go_on.set()

    assert _in_threads(first, second, release) == [0, 1, None]
