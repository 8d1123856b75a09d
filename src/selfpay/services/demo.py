"""Demo data: billers, a few hundred accounts with open bills. Deterministic by seed."""

from __future__ import annotations

import datetime as dt
import random

from selfpay.domain.accounts import Account, Bill, Biller
from selfpay.services.ports import UnitOfWork

BILLERS = (
    Biller("ELEC", "电费", "Electricity", kind="electricity", display_order=10, elderly=True),
    Biller("WATER", "水费", "Water", kind="water", display_order=20, elderly=True),
    Biller("GAS", "燃气费", "Gas", kind="gas", display_order=30),
    Biller("PROP", "物业费", "Property fee", kind="property", display_order=40, elderly=True),
    Biller("PARK", "停车费", "Parking", kind="parking", display_order=50),
)
_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢"
    "宋唐许韩冯邓曹彭曾萧田董潘袁蔡蒋余于杜叶程"
)
_GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红建国志文辉鹏飞"
_STREETS = ("人民路", "解放路", "中山路", "建设路", "和平街", "长江路", "滨江大道", "文化路")
# Typical monthly amounts in fen: (low, high) per biller.
_RANGES = {"ELEC": (3_000, 60_000), "WATER": (1_500, 12_000), "GAS": (2_000, 25_000),
           "PROP": (15_000, 60_000), "PARK": (10_000, 45_000)}


def seed_demo(
    uow: UnitOfWork, *, accounts_per_biller: int = 60, seed: int = 20261122,
    today: dt.date | None = None, now: dt.datetime | None = None,
) -> tuple[int, int]:
    """Add the demo billers, accounts and bills unless accounts exist. Commits.
    Returns (accounts added, bills added)."""
    if uow.accounts.count() > 0:
        return (0, 0)
    rnd = random.Random(seed)
    today = today or dt.date.today()
    for biller in BILLERS:
        if uow.billers.get(biller.code) is None:
            uow.billers.add(biller)
    accounts: list[Account] = []
    bills: list[Bill] = []
    for b_index, biller in enumerate(BILLERS):
        for i in range(accounts_per_biller):
            # Leading zeros on purpose: account numbers are strings.
            number = f"{b_index:02d}{rnd.randrange(10**8):08d}"
            if i % 10 == 0:
                number = f"00{b_index}{i:07d}"
            name = rnd.choice(_SURNAMES) + "".join(rnd.choices(_GIVEN, k=rnd.choice((1, 2))))
            phone = f"1{rnd.choice('3578')}{rnd.randrange(10**9):09d}"
            address = f"{rnd.choice(_STREETS)}{rnd.randrange(1, 400)}号{rnd.randrange(1, 30)}01室"
            accounts.append(Account(biller.code, number, name, phone, address))
            low, high = _RANGES[biller.code]
            months = rnd.choice((0, 1, 1, 2, 3))
            for m in range(months, 0, -1):
                month = (today.month - m - 1) % 12 + 1
                year = today.year + ((today.month - m - 1) // 12)
                due = dt.date(year, month, 28) + dt.timedelta(days=15)
                amount = rnd.randrange(low, high)
                bills.append(Bill(None, biller.code, number, f"{year:04d}-{month:02d}",
                                  amount, due))
    # Random numbers may repeat; keep the first of each key.
    unique: dict[tuple[str, str], Account] = {}
    for a in accounts:
        unique.setdefault((a.biller, a.number), a)
    keys = set(unique)
    seen: set[tuple[str, str, str]] = set()
    kept_bills = []
    for bill in bills:
        key = (bill.biller, bill.account, bill.period)
        if (bill.biller, bill.account) in keys and key not in seen:
            seen.add(key)
            kept_bills.append(bill)
    uow.accounts.upsert_many(list(unique.values()))
    uow.bills.add_many(kept_bills)
    uow.commit()
    return (len(unique), len(kept_bills))
