"""Batch jobs in the database, on SQLite and PostgreSQL: a job started by one web process
is followed through another, progress is written at most every 0.5 s, and a job whose
process stopped beating reads as failed instead of running forever."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine
from test_web_admin import PASSWORDS, sheet_csv, wait_for_job

from selfpay.adapters.db.engine import make_engine
from selfpay.adapters.db.migrate import upgrade
from selfpay.adapters.db.uow import SqlAlchemyUnitOfWork
from selfpay.bootstrap import Container, bootstrap
from selfpay.config import load_settings
from selfpay.domain.accounts import Account
from selfpay.entrypoints.web.app import create_app
from selfpay.services.jobs import JobTracker
from selfpay.services.ports import Job
from support.web import BASE, TestClient, add_staff, build_container, csrf_of, staff_login

NOW = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC)
UowFactory = Callable[[], SqlAlchemyUnitOfWork]


class Clock:
    def __init__(self) -> None:
        self.now = NOW
        self.mono = 100.0

    def __call__(self) -> dt.datetime:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)
        self.mono += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def other_engine(db_url: str, engine: Engine) -> Iterator[Engine]:
    """A second process's connection pool on the same (migrated) database."""
    eng = make_engine(db_url)
    try:
        yield eng
    finally:
        eng.dispose()


def tracker(uow_factory: UowFactory, clock: Clock) -> JobTracker:
    return JobTracker(uow_factory, clock=clock, monotonic=clock.monotonic)


# --- the tracker ------------------------------------------------------------------------

def test_progress_is_written_at_most_every_half_second_and_seen_by_another_process(
        uow_factory: UowFactory, other_engine: Engine, clock: Clock) -> None:
    mine = tracker(uow_factory, clock)
    theirs = tracker(lambda: SqlAlchemyUnitOfWork(other_engine), clock)
    job = mine.start(kind="qr_batch", owner="operator", filename="客户.xlsx")
    reporter = mine.reporter(job.id)

    def seen() -> tuple[str, int, int, dt.datetime]:
        status = theirs.read(job.id)
        assert status is not None and not status.lost
        return status.job.state, status.job.done, status.job.total, status.job.heartbeat_at

    assert seen() == ("running", 0, 0, NOW)
    reporter.progress(1, 10)
    assert seen() == ("running", 1, 10, NOW)
    clock.advance(0.3)
    reporter.progress(2, 10)  # within 0.5 s of the last write: not written
    assert seen()[:3] == ("running", 1, 10)
    clock.advance(0.3)
    reporter.progress(3, 10)
    assert seen() == ("running", 3, 10, NOW + dt.timedelta(seconds=0.6))
    clock.advance(0.1)
    assert reporter.finish("done", done=10, total=10, result={"batch_id": 7})
    state, done, total, _ = seen()
    assert (state, done, total) == ("done", 10, 10)
    status = theirs.read(job.id)
    assert status is not None and status.job.result == {"batch_id": 7}
    # a finished job stays as it ended: a late progress write or a second outcome is refused
    clock.advance(1)
    reporter.progress(4, 10)
    assert not reporter.finish("failed", message="late")
    assert seen()[:3] == ("done", 10, 10)


def test_a_running_job_whose_heartbeat_stopped_reads_as_failed(
        uow_factory: UowFactory, clock: Clock) -> None:
    jobs = tracker(uow_factory, clock)
    job = jobs.start(kind="qr_batch", owner="operator", filename="a.csv")
    jobs.reporter(job.id).progress(5, 100)
    clock.advance(30)
    status = jobs.read(job.id)
    assert status is not None and not status.lost and status.job.state == "running"
    clock.advance(1)
    status = jobs.read(job.id)
    assert status is not None and status.lost and status.job.state == "failed"
    assert (status.job.done, status.job.total) == (5, 100)
    # a heartbeat from a process that is alive after all brings it back
    jobs.reporter(job.id).beat()
    status = jobs.read(job.id)
    assert status is not None and not status.lost and status.job.state == "running"


def test_a_finished_job_is_never_stale(uow_factory: UowFactory, clock: Clock) -> None:
    jobs = tracker(uow_factory, clock)
    job = jobs.start(kind="qr_batch", owner="operator", filename="a.csv")
    jobs.reporter(job.id).finish("failed", message="bad sheet")
    clock.advance(3600)
    status = jobs.read(job.id)
    assert status is not None and not status.lost
    assert (status.job.state, status.job.message) == ("failed", "bad sheet")


def test_keep_alive_beats_while_the_job_reports_nothing(uow_factory: UowFactory) -> None:
    jobs = JobTracker(uow_factory, heartbeat_every_s=0.05)
    job = jobs.start(kind="qr_batch", owner="operator", filename="a.csv")
    with jobs.reporter(job.id).keep_alive():
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status = jobs.read(job.id)
            assert status is not None
            if status.job.heartbeat_at > job.heartbeat_at:
                break
            time.sleep(0.02)
        else:
            raise AssertionError("no heartbeat written")


def test_old_jobs_are_forgotten_when_a_new_one_starts(
        uow_factory: UowFactory, clock: Clock) -> None:
    jobs = tracker(uow_factory, clock)
    old = jobs.start(kind="qr_batch", owner="operator", filename="old.csv")
    clock.advance(31 * 24 * 3600)
    new = jobs.start(kind="qr_batch", owner="operator", filename="new.csv")
    assert jobs.read(old.id) is None and jobs.read(new.id) is not None


# --- through the web: two app instances on one database -----------------------------------

@dataclass
class Instance:
    container: Container
    client: TestClient


@pytest.fixture
def two_instances(db_url: str, tmp_path: Path) -> Iterator[tuple[Instance, Instance]]:
    """Two web processes (two containers, two apps) on one database and one data
    directory (the shared volume of the batch ZIPs and of the generated secrets)."""
    first = build_container(
        tmp_path, database_url=db_url,
        accounts=[Account("ELEC", "0012345678", "张三丰", "13812345678")])
    add_staff(first, PASSWORDS, NOW)
    settings = load_settings(data_dir=tmp_path, public_base_url=BASE, env="development",
                             database_url=db_url)
    upgrade(settings.sqlalchemy_url)
    second = bootstrap(settings)
    try:
        a = staff_login(create_app(container=first), "operator", PASSWORDS["operator"])
        b = TestClient(create_app(container=second))
        b.cookies = a.cookies  # the load balancer sends the same session cookie anywhere
        yield Instance(first, a), Instance(second, b)
    finally:
        second.close()
        first.close()


def _csrf(client: TestClient) -> str:
    return csrf_of(client.get("/admin/qr/batch").text)


def test_a_job_started_on_one_instance_is_followed_on_another(
        two_instances: tuple[Instance, Instance]) -> None:
    a, b = two_instances
    accounts = [f"00{i:08d}" for i in range(12)]
    r = a.client.post("/admin/qr/batch", data={"csrf_token": _csrf(a.client)},
                      files={"file": ("客户.csv", sheet_csv(accounts), "text/csv")})
    assert r.status_code == 200 and "/admin/qr/batch/jobs/" in r.url.path
    job = wait_for_job(b.client, r.url.path)  # every poll answered by the other process
    assert job["state"] == "done", job
    assert job["done"] == job["total"] == 12 and job["filename"] == "客户.csv"
    assert len(job["preview"]) == 6  # type: ignore[arg-type]
    page = b.client.get(r.url.path)
    assert page.status_code == 200 and str(job["download_url"]) in page.text
    assert b.client.get(str(job["download_url"])).status_code == 200


def test_progress_written_by_one_instance_shows_on_another(
        two_instances: tuple[Instance, Instance]) -> None:
    a, b = two_instances
    job = a.container.jobs.start(kind="qr_batch", owner="operator", filename="大表.xlsx")
    url = f"/admin/qr/batch/jobs/{job.id}"
    a.container.jobs.reporter(job.id).progress(300, 1000)
    seen = b.client.get(url + ".json").json()
    assert (seen["state"], seen["done"], seen["total"]) == ("running", 300, 1000)
    page = b.client.get(url)
    assert 'data-state="running"' in page.text and "300 / 1000" in page.text


def test_a_job_whose_process_died_is_shown_failed_with_a_reason(
        two_instances: tuple[Instance, Instance]) -> None:
    a, b = two_instances
    beat = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=45)
    with a.container.uow_factory() as uow:
        uow.jobs.add(Job(id="dead-job-1", kind="qr_batch", owner="operator",
                         filename="a.csv", created_at=beat, updated_at=beat,
                         heartbeat_at=beat, done=40, total=100))
        uow.commit()
    url = "/admin/qr/batch/jobs/dead-job-1"
    zh = b.client.get(url + ".json").json()
    assert (zh["state"], zh["done"], zh["total"]) == ("failed", 40, 100)
    assert "服务进程已停止响应" in zh["message"]
    page = b.client.get(url)
    assert 'data-state="failed"' in page.text and "服务进程已停止响应" in page.text
    en = b.client.get(url + ".json", params={"lang": "en"}).json()  # (keeps English)
    assert en["state"] == "failed" and "stopped responding" in en["message"]


def test_another_operators_job_is_not_found_on_any_instance(
        two_instances: tuple[Instance, Instance]) -> None:
    a, b = two_instances
    job = a.container.jobs.start(kind="qr_batch", owner="someone-else", filename="x.csv")
    assert b.client.get(f"/admin/qr/batch/jobs/{job.id}.json").status_code == 404
    assert b.client.get(f"/admin/qr/batch/jobs/{job.id}").status_code == 404
    admin = staff_login(b.client.app, "admin", PASSWORDS["admin"])  # type: ignore[arg-type]
    assert admin.get(f"/admin/qr/batch/jobs/{job.id}.json").status_code == 200
