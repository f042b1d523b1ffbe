"""Prometheus metrics: requests by route, submission outcomes, the review queue.

``diachiso serve --workers N`` runs N processes, and a scrape reaches whichever one the kernel
picks. Counters and histograms therefore use prometheus_client's multiprocess mode there:
every worker writes its values to files in a directory shared by the workers (set up by
:func:`shared_directory` before they start), and the worker that answers the scrape adds
them all up. Counts that belong to the data, not to a process (the review queue), are read
from the database at scrape time, so every worker gives the same answer. A worker that dies
leaves its files behind, which keeps the counters monotonic across worker restarts.

Labels are bounded: the route *template* (``/openrosa/{token}/submission``, never the path,
which would carry tokens and ids), a known method, the status code.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from service.db import Database

log = logging.getLogger(__name__)

#: prometheus_client reads it at import time: multiprocess mode when set.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Request latency buckets (s): intake batches of 20 take ~20–50 ms, exports many seconds.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: A scrape must answer while the database struggles: its queries give up after this.
_QUERY_TIMEOUT_MS = 2000
_REVIEW_QUEUE = text(
    "SELECT (SELECT count(*) FROM households WHERE status = 'flagged'), "
    "(SELECT count(*) FROM duplicate_candidates WHERE status = 'open')"
)


class Metrics:
    """The process's counters and histograms, and the scrape that reports them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "diachiso_http_requests",
            "HTTP requests answered, by method, route template and status code",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "diachiso_http_request_duration_seconds",
            "Time from request to the last byte of the answer, by method and route template",
            ["method", "route"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.submissions = Counter(
            "diachiso_submission_results",
            "Submission items answered, by channel (api, openrosa) and outcome; a resend "
            "answered with its first result counts again",
            ["channel", "outcome"],
            registry=self.registry,
        )

    def observe_request(self, *, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        method = method if method in _METHODS else "OTHER"
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def count_results(self, channel: str, outcomes: Mapping[str, int]) -> None:
        """Count the item results of one intake request."""
        for outcome, n in outcomes.items():
            self.submissions.labels(channel, outcome).inc(n)

    def exposition(self, database: Database) -> bytes:
        """The Prometheus text exposition: every worker's counters and the database gauges."""
        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            registry.register(_DatabaseGauges(database))
            return generate_latest(registry)
        registry = CollectorRegistry()
        registry.register(_Both(self.registry, _DatabaseGauges(database)))
        return generate_latest(registry)


class _Both(Collector):
    """This process's own metrics (single-process mode) and the database gauges."""

    def __init__(self, registry: CollectorRegistry, gauges: Collector) -> None:
        self.registry, self.gauges = registry, gauges

    def collect(self) -> Iterable[Metric]:
        yield from self.registry.collect()
        yield from self.gauges.collect()


class _DatabaseGauges(Collector):
    """Counts read from the database at scrape time, the same whichever worker answers."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def collect(self) -> Iterator[Metric]:
        queue = self._review_queue()
        up = GaugeMetricFamily(
            "diachiso_database_up", "1 when the database answered this scrape's queries"
        )
        up.add_metric([], 0.0 if queue is None else 1.0)
        yield up
        if queue is not None:
            family = GaugeMetricFamily(
                "diachiso_review_queue",
                "Work waiting for reviewers: flagged households and open duplicate candidates",
                labels=["queue"],
            )
            flagged, duplicates = queue
            family.add_metric(["flagged_households"], float(flagged))
            family.add_metric(["open_duplicates"], float(duplicates))
            yield family

    def _review_queue(self) -> tuple[int, int] | None:
        try:
            with self.database.sessions() as session, session.begin():
                session.execute(text(f"SET LOCAL statement_timeout = {_QUERY_TIMEOUT_MS}"))
                flagged, duplicates = session.execute(_REVIEW_QUEUE).one()
            return int(flagged), int(duplicates)
        except SQLAlchemyError as exc:
            log.warning("metrics: the database did not answer: %s", exc)
            return None


@contextmanager
def shared_directory(workers: int) -> Iterator[Path | None]:
    """Multiprocess mode for ``workers`` > 1: the workers' shared directory, wiped at start.

    ``PROMETHEUS_MULTIPROC_DIR`` when the operator set it (its stale ``*.db`` files are
    removed), else a private temporary directory removed afterwards. The variable must be
    in the environment before the workers start: they import prometheus_client fresh.
    """
    if workers <= 1:
        yield None
        return
    given = os.environ.get(MULTIPROC_ENV)
    path = Path(given) if given else Path(tempfile.mkdtemp(prefix="diachiso-metrics-"))
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(path)
    try:
        yield path
    finally:
        if not given:
            os.environ.pop(MULTIPROC_ENV, None)
            shutil.rmtree(path, ignore_errors=True)


def route_label(scope: Mapping[str, Any]) -> str:
    """The matched route's template, or ``unmatched`` (never the raw path)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else "unmatched"
