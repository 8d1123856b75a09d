"""The built-in ledger: allocate a payment to bills and post it exactly once.

Allocation pays the chosen bills, or else the open bills oldest period first. What is
left over stays on the account as prepaid balance, as utilities do; an existing prepaid
balance is not spent here (the amount due shown to a customer already subtracts it).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

from selfpay.domain.accounts import (
    AccountSummary,
    Bill,
    BillStatus,
    PaymentPosting,
    PostingResult,
    mask_name,
    normalize_account,
    normalize_biller,
)
from selfpay.domain.errors import AccountNotFound, InvalidAmount, InvalidInput
from selfpay.domain.ledger_errors import BillNotOpen, PaymentIdConflict
from selfpay.services.ports import DuplicatePayment, LedgerPayment, UnitOfWork

Applied = tuple[tuple[int, int], ...]
MAX_PAYMENT_ID = 64


def allocate(
    bills: Sequence[Bill], amount_fen: int, bill_ids: Iterable[int] = ()
) -> tuple[Applied, int]:
    """Split `amount_fen` over bills: (((bill id, fen), ...), surplus fen).

    With `bill_ids`, only those bills are paid (each must be among `bills` and open);
    otherwise every open bill, oldest period first. No bill gets more than it owes.
    """
    if type(amount_fen) is not int or amount_fen <= 0:
        raise InvalidAmount(f"payment amount must be a positive number of fen: {amount_fen!r}")
    payable = [
        b for b in bills
        if b.id is not None and b.status is BillStatus.OPEN and b.outstanding_fen > 0
    ]
    wanted = list(dict.fromkeys(bill_ids))
    if wanted:
        by_id = {b.id: b for b in payable}
        missing = [i for i in wanted if i not in by_id]
        if missing:
            raise BillNotOpen(key="err.bill.not_open", ids=[str(i) for i in missing])
        payable = [by_id[i] for i in wanted]
    payable.sort(key=lambda b: (b.period, b.id or 0))
    remaining = amount_fen
    applied: list[tuple[int, int]] = []
    for bill in payable:
        if remaining == 0:
            break
        fen = min(remaining, bill.outstanding_fen)
        assert bill.id is not None
        applied.append((bill.id, fen))
        remaining -= fen
    return tuple(applied), remaining


def post_payment(uow: UnitOfWork, posting: PaymentPosting, now: dt.datetime) -> PostingResult:
    """Post a payment in one transaction; a repeat of its payment id changes nothing and
    returns the first result with duplicate=True."""
    _check_posting(posting)
    biller = normalize_biller(posting.biller)
    number = normalize_account(posting.account)
    with uow:
        stored = uow.payments.get(posting.payment_id)
        if stored is not None:
            return _duplicate(stored, posting, biller, number)
        account = uow.accounts.get(biller, number, for_update=True)
        if account is None:
            raise AccountNotFound(key="err.account.unknown", biller=biller, account=number)
        # A twin may have committed while we waited for the lock.
        stored = uow.payments.get(posting.payment_id)
        if stored is not None:
            return _duplicate(stored, posting, biller, number)
        bills = uow.bills.open_for(biller, number, for_update=True)
        applied, surplus = allocate(bills, posting.amount_fen, posting.bill_ids)
        by_id = {b.id: b for b in bills}
        for bill_id, fen in applied:
            bill = by_id[bill_id]
            paid = bill.paid_fen + fen
            status = BillStatus.PAID if paid == bill.amount_fen else BillStatus.OPEN
            uow.bills.update_paid(bill_id, paid, status.value)
        balance = account.balance_fen + surplus
        if surplus:
            uow.accounts.set_balance(biller, number, balance)
        payment = LedgerPayment(
            payment_id=posting.payment_id,
            biller=biller,
            account=number,
            amount_fen=posting.amount_fen,
            surplus_fen=surplus,
            balance_after_fen=balance,
            applied=applied,
            channel=posting.channel,
            channel_txn_id=posting.channel_txn_id,
            paid_at=posting.paid_at,
            posted_at=now,
        )
        try:
            uow.payments.add(payment)
        except DuplicatePayment:
            uow.rollback()
        else:
            uow.commit()
            return PostingResult(posting.payment_id, applied, surplus, balance)
    # A concurrent twin won the insert: report what it stored.
    with uow:
        stored = uow.payments.get(posting.payment_id)
    if stored is None:  # pragma: no cover - the unique key said it exists
        raise DuplicatePayment(posting.payment_id)
    return _duplicate(stored, posting, biller, number)


def account_summary(uow: UnitOfWork, biller: str, account: str) -> AccountSummary:
    code = normalize_biller(biller)
    number = normalize_account(account)
    with uow:
        found = uow.accounts.get(code, number)
        if found is None:
            raise AccountNotFound(key="err.account.unknown", biller=code, account=number)
        bills = uow.bills.open_for(code, number)
    return AccountSummary(
        biller=code,
        account=number,
        masked_name=mask_name(found.name),
        balance_fen=found.balance_fen,
        open_bills=tuple(bills),
    )


def _check_posting(posting: PaymentPosting) -> None:
    if not posting.payment_id or len(posting.payment_id) > MAX_PAYMENT_ID:
        raise InvalidInput(f"payment id must be 1-{MAX_PAYMENT_ID} characters")
    if type(posting.amount_fen) is not int or posting.amount_fen <= 0:
        raise InvalidAmount(f"payment amount must be a positive number of fen: "
                            f"{posting.amount_fen!r}")


def _duplicate(
    stored: LedgerPayment, posting: PaymentPosting, biller: str, number: str
) -> PostingResult:
    if (stored.biller, stored.account, stored.amount_fen) != (biller, number, posting.amount_fen):
        raise PaymentIdConflict(
            f"payment {posting.payment_id} was posted for {stored.biller} {stored.account} "
            f"{stored.amount_fen} fen, not {biller} {number} {posting.amount_fen} fen"
        )
    return PostingResult(
        payment_id=stored.payment_id,
        applied=stored.applied,
        surplus_fen=stored.surplus_fen,
        balance_fen=stored.balance_after_fen,
        duplicate=True,
    )
