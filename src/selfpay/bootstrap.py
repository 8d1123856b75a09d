"""The composition root: the one place that builds adapters from Settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine

from selfpay.adapters.billing.ledger import LedgerBillingSystem
from selfpay.adapters.db.engine import make_engine
from selfpay.adapters.db.uow import SqlAlchemyUnitOfWork
from selfpay.adapters.passwords import Argon2Hasher
from selfpay.config import Settings
from selfpay.domain.qrcodes import QrKeyring
from selfpay.services.ports import BillingSystem, PasswordHasher, UnitOfWork


@dataclass
class Container:
    settings: Settings
    engine: Engine
    uow_factory: Callable[[], UnitOfWork]
    billing: BillingSystem
    hasher: PasswordHasher
    keyring: QrKeyring
    code_base: str  # e.g. "HTTPS://PAY.EXAMPLE.CN/Q/"

    @property
    def batch_dir(self) -> Path:
        return self.settings.data_dir / "batches"

    def close(self) -> None:
        self.engine.dispose()


def bootstrap(settings: Settings) -> Container:
    engine = make_engine(settings.sqlalchemy_url)

    def uow_factory() -> UnitOfWork:
        return SqlAlchemyUnitOfWork(engine)

    return Container(
        settings=settings,
        engine=engine,
        uow_factory=uow_factory,
        billing=LedgerBillingSystem(uow_factory),
        hasher=Argon2Hasher(),
        keyring=settings.keyring(),
        code_base=settings.code_base,
    )
