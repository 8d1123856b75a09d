"""Background jobs whose progress every web process can read: the record lives in the
database (JobRepository), not in the memory of the process that runs the job.

The running process reports through a JobReporter: progress at most every
`write_every` seconds (plus the final state), each in a short transaction of its own,
and a heartbeat from a keep-alive thread. A reader sees a running job whose heartbeat is
older than `stale_after` as lost (its process died): `JobStatus.lost`, state "failed".
Nothing has to mark it, so no job stays "running" forever.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from selfpay.services.ports import Job, UnitOfWork

log = logging.getLogger(__name__)

STALE_AFTER = dt.timedelta(seconds=30)
WRITE_EVERY_S = 0.5
HEARTBEAT_EVERY_S = 5.0
KEEP_FOR = dt.timedelta(days=30)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class JobStatus:
    """A job as a reader should show it: `lost` means it was running when its process
    stopped beating, and `job.state` is then "failed"."""

    job: Job
    lost: bool = False


class JobTracker:
    def __init__(
        self,
        uow_factory: Callable[[], UnitOfWork],
        *,
        read_uow_factory: Callable[[], UnitOfWork] | None = None,
        clock: Callable[[], dt.datetime] = _utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        stale_after: dt.timedelta = STALE_AFTER,
        write_every_s: float = WRITE_EVERY_S,
        heartbeat_every_s: float = HEARTBEAT_EVERY_S,
        keep_for: dt.timedelta = KEEP_FOR,
    ) -> None:
        self._uow_factory = uow_factory
        self._read_uow = read_uow_factory or uow_factory
        self._clock = clock
        self._monotonic = monotonic
        self.stale_after = stale_after
        self.write_every_s = write_every_s
        self.heartbeat_every_s = heartbeat_every_s
        self._keep_for = keep_for

    def start(self, *, kind: str, owner: str, filename: str) -> Job:
        """Record a new running job (and forget jobs untouched for `keep_for`)."""
        now = self._clock()
        job = Job(id=secrets.token_urlsafe(16), kind=kind, owner=owner, filename=filename,
                  created_at=now, updated_at=now, heartbeat_at=now)
        with self._uow_factory() as uow:
            uow.jobs.delete_older_than(now - self._keep_for)
            uow.jobs.add(job)
            uow.commit()
        return job

    def read(self, job_id: str) -> JobStatus | None:
        with self._read_uow() as uow:
            job = uow.jobs.get(job_id)
        if job is None:
            return None
        if job.state == "running" and self._clock() - job.heartbeat_at > self.stale_after:
            return JobStatus(replace(job, state="failed"), lost=True)
        return JobStatus(job)

    def reporter(self, job_id: str) -> JobReporter:
        return JobReporter(self, job_id)

    def _write(self, job_id: str, **changes: Any) -> bool:
        with self._uow_factory() as uow:
            changed = uow.jobs.update(job_id, now=self._clock(), **changes)
            uow.commit()
        return changed


class JobReporter:
    """What the process running one job writes. Thread-safe: a batch may report from
    several worker threads. A failed progress write or heartbeat is logged and skipped
    (the job goes on); the final write raises."""

    def __init__(self, tracker: JobTracker, job_id: str) -> None:
        self._tracker = tracker
        self.job_id = job_id
        self._lock = threading.Lock()
        self._last_write: float | None = None

    def progress(self, done: int, total: int) -> None:
        with self._lock:
            now = self._tracker._monotonic()
            if self._last_write is not None and (
                    now - self._last_write < self._tracker.write_every_s):
                return
            self._last_write = now
            self._quietly(done=done, total=total)

    def beat(self) -> None:
        with self._lock:
            self._quietly()

    def finish(self, state: str, *, message: str = "", done: int | None = None,
               total: int | None = None, result: Mapping[str, Any] | None = None) -> bool:
        """The final state: done or failed. False if the job was no longer running."""
        if state not in ("done", "failed"):
            raise ValueError(f"a job ends done or failed, not {state!r}")
        with self._lock:
            return self._tracker._write(self.job_id, state=state, message=message, done=done,
                                        total=total, result=result)

    @contextmanager
    def keep_alive(self) -> Iterator[None]:
        """Refresh the heartbeat every heartbeat_every_s while the block runs, whether or
        not the job reports progress (reading a big sheet takes a while)."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self._tracker.heartbeat_every_s):
                self.beat()

        thread = threading.Thread(target=beat, name=f"job-beat-{self.job_id[:8]}",
                                  daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def _quietly(self, **changes: Any) -> None:
        try:
            self._tracker._write(self.job_id, **changes)
        except Exception:  # a progress write must not kill the job it reports on
            log.warning("job %s: progress not recorded", self.job_id, exc_info=True)
