"""SqlAlchemyUnitOfWork: one Connection and one transaction per `with` block."""

from __future__ import annotations

from typing import Any, Self

from sqlalchemy import Connection, Engine

from selfpay.adapters.db import device_repositories as dev_repos
from selfpay.adapters.db import payment_repositories as pay_repos
from selfpay.adapters.db import repositories as repos
from selfpay.adapters.db import work_order_repositories as wo_repos
from selfpay.adapters.db.engine import READ_ONLY
from selfpay.services.ports import (
    AccountRepository,
    AlarmRepository,
    AuditLog,
    BillerRepository,
    BillRepository,
    DeviceRepository,
    ImportRunRepository,
    JobRepository,
    LedgerPaymentRepository,
    LedgerWorkOrderRepository,
    MaintenanceRepository,
    MessageOutbox,
    NotificationLog,
    OrderRepository,
    PayerAccounts,
    PostingOutbox,
    QrBatchRepository,
    RateLimitRepository,
    SmsCodeRepository,
    StaffSessionRepository,
    UserRepository,
    WorkOrderRepository,
)


class SqlAlchemyUnitOfWork:
    """Implements services.ports.UnitOfWork.

    The transaction begins with the first statement; commit() ends it and the next
    statement begins another; leaving the outermost block rolls back whatever was not
    committed and closes the connection. The object can be used for one block after
    another.

    Entering it again while it is open joins the open block, so a use case that says
    `with uow:` also works when its caller already did: the inner block opens nothing,
    and on leaving it rolls back only if an exception is on its way out (a failed use
    case writes nothing), never the caller's pending work otherwise.

    ``read_only=True`` is for reads that change nothing: SQLite begins deferred instead of
    IMMEDIATE, PostgreSQL runs the statements in autocommit (commit() is then a no-op).
    """

    billers: BillerRepository
    accounts: AccountRepository
    bills: BillRepository
    payments: LedgerPaymentRepository
    users: UserRepository
    staff_sessions: StaffSessionRepository
    audit: AuditLog
    imports: ImportRunRepository
    batches: QrBatchRepository
    jobs: JobRepository
    orders: OrderRepository
    postings: PostingOutbox
    notifications: NotificationLog
    messages: MessageOutbox
    sms_codes: SmsCodeRepository
    payers: PayerAccounts
    work_orders: WorkOrderRepository
    ledger_work_orders: LedgerWorkOrderRepository
    rate_limits: RateLimitRepository
    devices: DeviceRepository
    alarms: AlarmRepository
    maintenance: MaintenanceRepository

    def __init__(self, engine: Engine, *, read_only: bool = False) -> None:
        self._engine = engine
        self._read_only = read_only
        self._conn: Connection | None = None
        self._depth = 0

    @property
    def connection(self) -> Connection:
        if self._conn is None:
            raise RuntimeError("the unit of work is not open: use `with uow:`")
        return self._conn

    def __enter__(self) -> Self:
        self._depth += 1
        if self._conn is not None:
            return self
        conn = self._engine.connect()
        if self._read_only:
            # SQLite: a deferred BEGIN (engine.py). PostgreSQL: no transaction at all, each
            # statement on its own (READ COMMITTED gives every statement its own snapshot
            # anyway): no BEGIN and ROLLBACK round trips on the pages customers poll.
            options: dict[str, Any] = {READ_ONLY: True}
            if conn.dialect.name == "postgresql":
                options["isolation_level"] = "AUTOCOMMIT"
            conn = conn.execution_options(**options)
        self._conn = conn
        self.billers = repos.SqlAlchemyBillerRepository(conn)
        self.accounts = repos.SqlAlchemyAccountRepository(conn)
        self.bills = repos.SqlAlchemyBillRepository(conn)
        self.payments = repos.SqlAlchemyLedgerPaymentRepository(conn)
        self.users = repos.SqlAlchemyUserRepository(conn)
        self.staff_sessions = repos.SqlAlchemyStaffSessionRepository(conn)
        self.audit = repos.SqlAlchemyAuditLog(conn)
        self.imports = repos.SqlAlchemyImportRunRepository(conn)
        self.batches = repos.SqlAlchemyQrBatchRepository(conn)
        self.jobs = repos.SqlAlchemyJobRepository(conn)
        self.orders = pay_repos.SqlAlchemyOrderRepository(conn)
        self.postings = pay_repos.SqlAlchemyPostingOutbox(conn)
        self.notifications = pay_repos.SqlAlchemyNotificationLog(conn)
        self.messages = pay_repos.SqlAlchemyMessageOutbox(conn)
        self.sms_codes = pay_repos.SqlAlchemySmsCodeRepository(conn)
        self.payers = pay_repos.SqlAlchemyPayerAccounts(conn)
        self.work_orders = wo_repos.SqlAlchemyWorkOrderRepository(conn)
        self.ledger_work_orders = wo_repos.SqlAlchemyLedgerWorkOrderRepository(conn)
        self.rate_limits = repos.SqlAlchemyRateLimitRepository(conn)
        self.devices = dev_repos.SqlAlchemyDeviceRepository(conn)
        self.alarms = dev_repos.SqlAlchemyAlarmRepository(conn)
        self.maintenance = dev_repos.SqlAlchemyMaintenanceRepository(conn)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._depth -= 1
        conn = self._conn
        if conn is None:
            return
        if self._depth > 0:
            if exc and exc[0] is not None:
                conn.rollback()
            return
        self._conn = None
        try:
            conn.rollback()
        finally:
            conn.close()

    def commit(self) -> None:
        self.connection.commit()

    def rollback(self) -> None:
        self.connection.rollback()
