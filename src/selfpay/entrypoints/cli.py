"""The `selfpay` command. Each command parses its input, calls a use case, and prints."""

from __future__ import annotations

import datetime as dt
import getpass
import os
import secrets
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from selfpay.adapters.sheet_guard import SheetLimits
from selfpay.bootstrap import Container, bootstrap
from selfpay.config import Settings, SettingsError, load_settings, new_qr_key
from selfpay.domain.accounts import normalize_account, normalize_biller
from selfpay.domain.errors import DomainError, InvalidCode
from selfpay.domain.ledger_errors import UnreadableFile
from selfpay.domain.messages import DEFAULT_LANG, LANGS, translate
from selfpay.domain.qrcodes import make_payload, verify_payload
from selfpay.entrypoints.kiosk_agent import kiosk_app
from selfpay.services.ports import RowError

app = typer.Typer(help="selfpay: self-service bill payment.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
db_app = typer.Typer(help="Database schema (Alembic).", no_args_is_help=True)
import_app = typer.Typer(help="Import accounts or bills from .xlsx or .csv.", no_args_is_help=True)
qr_app = typer.Typer(help="QR codes of accounts.", no_args_is_help=True)
users_app = typer.Typer(help="Staff users of the admin console.", no_args_is_help=True)
keys_app = typer.Typer(help="QR signing keys.", no_args_is_help=True)
billers_app = typer.Typer(help="The biller registry: the services customers pay.",
                          no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(import_app, name="import")
app.add_typer(qr_app, name="qr")
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="keys")
app.add_typer(billers_app, name="billers")
app.add_typer(kiosk_app, name="kiosk-agent")  # runs on a terminal: entrypoints/kiosk_agent.py

out = Console()
err = Console(stderr=True)
BAD_FILE = 2  # exit status for a file that is no sheet or is past the caps (1: bad rows)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # noqa: BLE001 - no login name in some containers
        return "cli"


def _env_lang() -> str:
    """The language of messages before the settings are read, or when they cannot be:
    SELFPAY_LOCALE as the environment has it."""
    raw = os.environ.get("SELFPAY_LOCALE", "")
    return raw if raw in LANGS else DEFAULT_LANG


def _fail(message: str, lang: str | None = None, code: int = 1) -> typer.Exit:
    """One line on stderr, "错误：..." or "error: ..." in the configured language."""
    prefix = translate(lang or _env_lang(), "cli.error")
    err.print(f"[red]{prefix}[/red]{escape(message)}", soft_wrap=True)  # prefix ends "：" / ": "
    return typer.Exit(code)


def _refuse(c: Container, key: str, /, **values: object) -> typer.Exit:
    """_fail() with a catalog message in Settings.locale."""
    lang = c.settings.locale
    return _fail(translate(lang, key, **values), lang)


def _fail_error(exc: DomainError, c: Container) -> typer.Exit:
    """A domain error told in Settings.locale (str(exc) is the English of the logs)."""
    lang = c.settings.locale
    return _fail(exc.localized(lang), lang)


def _row_line(e: RowError, lang: str) -> str:
    """A sheet's row error in `lang`, its row named once ("row 3: ..."); row 0 is about
    the whole sheet."""
    message = e.localized(lang)
    return escape(translate(lang, "cli.row_error", row=e.row, message=message)
                  if e.row else message)


def _print_rows(errors: Sequence[RowError], lang: str, *, prefix: str = "",
                shown: int = 200) -> None:
    for e in errors[:shown]:
        err.print(f"  {prefix}{_row_line(e, lang)}", soft_wrap=True)
    if len(errors) > shown:
        err.print("  " + escape(translate(lang, "err.import.more_errors",
                                          n=len(errors) - shown)))


def _print_warnings(warnings: Sequence[RowError], lang: str) -> None:
    prefix = translate(lang, "cli.warning")
    for w in warnings:
        err.print(f"[yellow]{escape(prefix)}[/yellow]{escape(w.localized(lang))}",
                  soft_wrap=True)


def _container(*, migrate: bool = True, **overrides: Any) -> Container:
    try:
        settings = load_settings(**overrides)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    if migrate:
        from selfpay.adapters.db.migrate import upgrade

        upgrade(settings.sqlalchemy_url)
    return bootstrap(settings)


def _resolve_biller(c: Container, biller: str | None) -> str:
    """An enabled biller's code: the one given, or the only one there is."""
    with c.uow_factory() as uow:
        billers = uow.billers.list()
    known = [b.code for b in billers if b.enabled]
    if biller is None:
        if len(known) == 1:
            return known[0]
        if not billers:
            raise _refuse(c, "cli.no_billers")
        raise _refuse(c, "cli.give_biller", known=known or ["-"])
    try:
        code = normalize_biller(biller)
    except DomainError as exc:
        raise _fail_error(exc, c) from exc
    if code not in known:
        if any(b.code == code for b in billers):
            raise _refuse(c, "cli.biller_disabled", code=code)
        raise _refuse(c, "cli.biller_unknown", code=code, known=known or ["-"])
    return code


# --- db -------------------------------------------------------------------------------

@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Create or migrate the schema to the newest revision."""
    from selfpay.adapters.db.migrate import current, upgrade

    settings = load_settings()
    upgrade(settings.sqlalchemy_url, revision)
    out.print(f"database at revision {current(settings.sqlalchemy_url)}")


# --- import ---------------------------------------------------------------------------

def _sheet_limits(c: Container) -> SheetLimits:
    return SheetLimits.from_settings(c.settings)


def _bad_file(path: Path, exc: UnreadableFile, c: Container) -> typer.Exit:
    """A file that is no sheet, or one past the caps: refused unread, exit status 2."""
    lang = c.settings.locale
    return _fail(f"{path}: {exc.localized(lang)}", lang, code=BAD_FILE)


def _import(kind: str, path: Path, skip_invalid: bool) -> None:
    from selfpay.adapters.tabular import read_table
    from selfpay.services import imports

    c = _container()
    try:
        table = read_table(path, path.name, limits=_sheet_limits(c))
    except UnreadableFile as exc:
        raise _bad_file(path, exc, c) from exc
    except DomainError as exc:
        raise _fail(f"{path}: {exc.localized(c.settings.locale)}", c.settings.locale) from exc
    except (ValueError, OSError) as exc:
        raise _fail(f"{path}: {exc}", c.settings.locale) from exc
    use_case = imports.import_accounts if kind == "accounts" else imports.import_bills
    # rows checked in a read-only unit of work: no write lock until the rows are written
    run = use_case(c.uow_factory(), table, filename=path.name, actor=_actor(),
                   skip_invalid=skip_invalid, now=_now(), check_uow=c.read_uow_factory())
    _print_rows(run.errors, c.settings.locale)
    if run.status == "rejected":
        raise _refuse(c, "cli.import_rejected", n=len(run.errors))
    out.print(f"imported {run.imported} {kind}, skipped {run.skipped} invalid row(s) "
              f"(import #{run.id})")


@import_app.command("accounts")
def import_accounts(
    file: Path,
    skip_invalid: Annotated[bool, typer.Option(help="Import the valid rows, skip bad ones.")] = (
        False
    ),
) -> None:
    """Columns biller,account,name,phone,address or 业务类型,用户编号,户名,电话,地址."""
    _import("accounts", file, skip_invalid)


@import_app.command("bills")
def import_bills(
    file: Path,
    skip_invalid: Annotated[bool, typer.Option(help="Import the valid rows, skip bad ones.")] = (
        False
    ),
) -> None:
    """Columns biller,account,period,amount,due_date or 业务类型,用户编号,账期,金额,到期日
    (amount in yuan, at most two decimals)."""
    _import("bills", file, skip_invalid)


# --- qr ---------------------------------------------------------------------------------

@qr_app.command("make")
def qr_make(
    account: str,
    out_file: Annotated[Path | None, typer.Option("--out", help="PNG, SVG or PDF by suffix")] = (
        None
    ),
    biller: Annotated[str | None, typer.Option(help="Biller code, e.g. ELEC")] = None,
) -> None:
    """Write the QR code of one account (default file: <account>.png)."""
    from selfpay.adapters.qr.render import format_for_path, render
    from selfpay.services import audit

    c = _container()
    code = _resolve_biller(c, biller)
    try:
        number = normalize_account(account)
    except DomainError as exc:
        raise _fail_error(exc, c) from exc
    target = out_file or Path(f"{number}.png")
    try:
        fmt = format_for_path(target)
    except ValueError as exc:
        raise _fail(str(exc), c.settings.locale) from exc
    payload = make_payload(c.code_base, c.keyring, code, number)
    with c.uow_factory() as uow:
        known = uow.accounts.get(code, number) is not None
        audit.record(uow, actor=_actor(), action="qr.make", target=f"{code}/{number}",
                     detail={"format": fmt, "file": target.name}, now=_now())
        uow.commit()
    target.write_bytes(render(payload, fmt))
    if not known:
        note = translate(c.settings.locale, "cli.not_in_ledger", code=code, account=number)
        err.print(f"[yellow]{escape(note)}[/yellow]")
    out.print(f"{target}  {payload}")


@qr_app.command("verify")
def qr_verify(payload: str) -> None:
    """Check a scanned payload: prints biller and account, or why it is invalid (exit 1)."""
    settings = load_settings()
    try:
        ref = verify_payload(settings.code_base, settings.keyring(), payload.strip())
    except InvalidCode as exc:
        lang = settings.locale
        raise _fail(translate(lang, "cli.code_invalid", reason=exc.localized(lang)), lang
                    ) from exc
    out.print(f"valid  biller={ref.biller}  account={ref.account}  key={ref.key_id}")


@qr_app.command("template")
def qr_template(out_file: Path) -> None:
    """Write the Excel template for batch generation."""
    from selfpay.adapters.qr.sheets import write_template

    write_template(out_file, audience="cli")
    out.print(f"wrote {out_file}")


@qr_app.command("batch")
def qr_batch(
    sheet: Path,
    out_file: Annotated[Path, typer.Option("--out", help="ZIP to write")],
    biller: Annotated[str | None, typer.Option(help="Biller for rows that name none")] = None,
    skip_invalid: Annotated[bool, typer.Option(help="Generate valid rows, skip bad ones.")] = False,
    workers: Annotated[int, typer.Option(help="Processes; 0 = one per core")] = 0,
) -> None:
    """One PNG per account of an .xlsx/.csv sheet, plus manifest.csv, in a ZIP."""
    from selfpay.adapters.qr.jobs import BatchRejected, run_batch

    c = _container()
    default = _resolve_biller(c, biller) if biller else None
    if not sheet.exists():
        raise _refuse(c, "cli.no_file", path=str(sheet))
    label = escape(translate(c.settings.locale, "cli.batch_progress"))
    with Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=err, transient=False) as bar:
        task = bar.add_task("qr", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            outcome = run_batch(
                uow_factory=c.uow_factory, keyring=c.keyring, code_base=c.code_base,
                batch_dir=c.batch_dir, source=sheet, filename=sheet.name, actor=_actor(),
                default_biller=default, skip_invalid=skip_invalid,
                workers=workers or c.settings.batch_workers or None, progress=progress,
                limits=_sheet_limits(c), audience="cli",
            )
        except BatchRejected as exc:
            bar.stop()
            _print_warnings(exc.warnings, c.settings.locale)
            _print_rows(exc.errors, c.settings.locale)
            raise _refuse(c, "cli.batch_rejected", n=len(exc.errors)) from exc
        except UnreadableFile as exc:
            bar.live.transient = True  # nothing was made: the error line alone
            bar.stop()
            raise _bad_file(sheet, exc, c) from exc
        except DomainError as exc:
            raise _fail(f"{sheet}: {exc.localized(c.settings.locale)}", c.settings.locale
                        ) from exc
        except (ValueError, OSError) as exc:
            raise _fail(f"{sheet}: {exc}", c.settings.locale) from exc
    _print_warnings(outcome.warnings, c.settings.locale)
    _print_rows(outcome.skipped, c.settings.locale,
                prefix=escape(translate(c.settings.locale, "cli.skipped")),
                shown=len(outcome.skipped))
    out_file.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(outcome.path, out_file)
    b = outcome.batch
    out.print(f"wrote {out_file}: {b.count} codes, sha256 {b.sha256} (batch #{b.id})")


@qr_app.command("sheet")
def qr_sheet(
    sheet: Path,
    out_file: Annotated[Path, typer.Option("--out", help="PDF to write")],
    biller: Annotated[str | None, typer.Option(help="Biller for rows that name none")] = None,
    skip_invalid: Annotated[bool, typer.Option(help="Skip bad rows.")] = False,
) -> None:
    """Print-ready A4 payment cards (QR, biller, account, masked name) for a sheet."""
    from selfpay.adapters.qr.cards import CardItem, render_cards_pdf
    from selfpay.adapters.qr.sheets import read_batch_rows, validate_batch_rows
    from selfpay.domain.accounts import mask_name
    from selfpay.services import audit

    c = _container()
    default = _resolve_biller(c, biller) if biller else None
    with c.uow_factory() as uow:
        billers = {b.code: b for b in uow.billers.list()}
    try:
        rows = read_batch_rows(sheet, filename=sheet.name, limits=_sheet_limits(c))
    except UnreadableFile as exc:
        raise _bad_file(sheet, exc, c) from exc
    except DomainError as exc:
        raise _fail(f"{sheet}: {exc.localized(c.settings.locale)}", c.settings.locale) from exc
    except (ValueError, OSError) as exc:
        raise _fail(f"{sheet}: {exc}", c.settings.locale) from exc
    plan = validate_batch_rows(rows, default_biller=default,
                               known_billers={k for k, b in billers.items() if b.enabled})
    _print_rows(plan.errors, c.settings.locale)
    if plan.errors and not skip_invalid:
        raise _refuse(c, "cli.sheet_rejected", n=len(plan.errors))
    cards = []
    with c.uow_factory() as uow:
        for code, number in plan.items:
            acct = uow.accounts.get(code, number)
            cards.append(CardItem(
                biller=code, biller_name=billers[code].name, account=number,
                masked_name=mask_name(acct.name) if acct else "",
                payload=make_payload(c.code_base, c.keyring, code, number)))
        audit.record(uow, actor=_actor(), action="qr.sheet", target=out_file.name,
                     detail={"source": sheet.name, "count": len(cards)}, now=_now())
        uow.commit()
    pages = render_cards_pdf(cards, out_file, locale=c.settings.locale)
    out.print(f"wrote {out_file}: {len(cards)} cards on {pages} page(s)")


# --- users and keys ---------------------------------------------------------------------

@users_app.command("add")
def users_add(
    username: str,
    role: Annotated[str, typer.Option(help="admin | operator | auditor")] = "operator",
    password_stdin: Annotated[bool, typer.Option(help="Read the password from stdin")] = False,
) -> None:
    """Add a staff user (asks for the password)."""
    from selfpay.services import users

    c = _container()
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    try:
        with c.uow_factory() as uow:
            users.create_user(uow, c.hasher, username=username, password=password, role=role,
                              now=_now())
            uow.commit()
    except DomainError as exc:
        raise _fail_error(exc, c) from exc
    out.print(f"added {username} ({role})")


@keys_app.command("new")
def keys_new(key_id: Annotated[str, typer.Argument(help="one character 0-9 or A-Z")] = "2") -> None:
    """Print a new QR key to append to SELFPAY_QR_KEYS (old keys keep verifying)."""
    out.print(f"{key_id}:{new_qr_key()}")


# --- billers ---------------------------------------------------------------------------

KindOpt = Annotated[str | None, typer.Option(
    help="electricity | water | gas | property | parking | other")]
NameEnOpt = Annotated[str | None, typer.Option("--name-en", help="English name")]
IconOpt = Annotated[str | None, typer.Option(
    help="electricity, water, gas, property, parking, heating, internet, phone, tv, other; "
         "'' for the kind's")]
OrderOpt = Annotated[int | None, typer.Option("--order", help="display order 0-9999, lower "
                                                                "first")]
ElderlyOpt = Annotated[bool | None, typer.Option("--elderly/--no-elderly",
                                                 help="offered in the kiosk's elderly mode")]
StepsOpt = Annotated[str | None, typer.Option(
    help="kiosk steps, comma-separated, in order: choose,identify,identify_plate,"
         "confirm_plate,confirm,pay,receipt; '' for the kind's")]
RouteOpt = Annotated[str | None, typer.Option(
    help="billing route: default, or a name in SELFPAY_BILLING_ROUTES")]


def _biller_fields(*, name: str | None, name_en: str | None, kind: str | None,
                   icon: str | None, order: int | None, elderly: bool | None,
                   steps: str | None, route: str | None) -> dict[str, Any]:
    from selfpay.services.billers import parse_steps

    given = {"name": name, "name_en": name_en, "kind": kind, "icon": icon,
             "display_order": order, "elderly": elderly,
             "steps": None if steps is None else parse_steps(steps), "route": route}
    return {k: v for k, v in given.items() if v is not None}


@billers_app.command("add")
def billers_add(
    code: Annotated[str, typer.Argument(help="A letter, then up to 7 letters or digits")],
    name: Annotated[str, typer.Option(help="Name shown to customers, e.g. 电费")],
    name_en: NameEnOpt = None, kind: KindOpt = None, icon: IconOpt = None,
    order: OrderOpt = None, elderly: ElderlyOpt = None, steps: StepsOpt = None,
    route: RouteOpt = None,
) -> None:
    """Register a biller, so that accounts can be imported and codes made for it."""
    from selfpay.services import billers

    c = _container()
    try:
        made = billers.add_biller(
            c.uow_factory(), code=code, routes=c.settings.route_names, actor=_actor(),
            now=_now(), **_biller_fields(name=name, name_en=name_en, kind=kind, icon=icon,
                                         order=order, elderly=elderly, steps=steps,
                                         route=route))
    except DomainError as exc:
        raise _fail_error(exc, c) from exc
    finally:
        c.close()
    out.print(f"added biller {made.code} {made.name} ({made.kind}, route {made.route})")


@billers_app.command("set")
def billers_set(
    code: str,
    name: Annotated[str | None, typer.Option(help="Name shown to customers")] = None,
    name_en: NameEnOpt = None, kind: KindOpt = None, icon: IconOpt = None,
    order: OrderOpt = None, elderly: ElderlyOpt = None, steps: StepsOpt = None,
    route: RouteOpt = None,
) -> None:
    """Change some of a biller's fields (the others stay)."""
    from selfpay.services import billers

    changes = _biller_fields(name=name, name_en=name_en, kind=kind, icon=icon, order=order,
                             elderly=elderly, steps=steps, route=route)
    if not changes:
        raise _fail(translate(_env_lang(), "cli.nothing_to_change"))
    c = _container()
    try:
        b = billers.update_biller(c.uow_factory(), code, routes=c.settings.route_names,
                                  actor=_actor(), now=_now(), **changes)
    except DomainError as exc:
        raise _fail_error(exc, c) from exc
    finally:
        c.close()
    out.print(f"biller {b.code}: {', '.join(f'{k}={v!r}' for k, v in changes.items())}")


def _set_enabled(code: str, enabled: bool) -> None:
    from selfpay.services import billers

    c = _container()
    use_case = billers.enable_biller if enabled else billers.disable_biller
    try:
        b = use_case(c.uow_factory(), code, actor=_actor(), now=_now())
    except DomainError as exc:
        raise _fail_error(exc, c) from exc
    finally:
        c.close()
    out.print(f"biller {b.code} {'enabled' if b.enabled else 'disabled'}")


@billers_app.command("disable")
def billers_disable(code: str) -> None:
    """Offer the biller to no one (its accounts and history stay)."""
    _set_enabled(code, False)


@billers_app.command("enable")
def billers_enable(code: str) -> None:
    """Offer a disabled biller again."""
    _set_enabled(code, True)


@billers_app.command("list")
def billers_list() -> None:
    """The billers in display order."""
    from selfpay.services import billers

    c = _container()
    try:
        found = billers.list_billers(c.uow_factory())
    finally:
        c.close()
    if not found:
        out.print("no billers yet: `selfpay billers add CODE --name NAME`")
        return
    table = Table()
    for title in ("code", "name", "name (en)", "kind", "order", "elderly", "route", "enabled"):
        table.add_column(title, overflow="fold")  # a narrow terminal wraps, never cuts
    for b in found:
        table.add_row(b.code, b.name, b.name_en, b.kind, str(b.display_order),
                      "yes" if b.elderly else "no", b.route,
                      "yes" if b.enabled else "[red]no[/red]")
    out.print(table)


# --- serve and demo ---------------------------------------------------------------------

@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="default: SELFPAY_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="default: SELFPAY_PORT")] = None,
    workers: Annotated[int, typer.Option(
        help="web processes sharing the port; 0: one per core")] = 0,
    access_log: Annotated[bool | None, typer.Option(
        "--access-log/--no-access-log",
        help="uvicorn's line per request; default: SELFPAY_ACCESS_LOG")] = None,
) -> None:
    """Run the web tier (public pages, API, admin console). Each process also runs the
    posting / reconcile / message loops unless SELFPAY_RUN_WORKER=false (then run
    `selfpay worker` on its own)."""
    import uvicorn

    from selfpay.entrypoints.web.app import create_app

    # Settings, generated secrets and migrations once, here, before any process starts:
    # web processes read the same secrets file and find the schema ready.
    c = _container()
    s = c.settings
    n = workers or os.cpu_count() or 1
    bind: dict[str, Any] = {"host": host or s.host, "port": port or s.port, "log_level": "info",
                            "access_log": s.access_log if access_log is None else access_log,
            # X-Forwarded-For is read by the app itself, and only from the proxies in
            # SELFPAY_TRUSTED_PROXIES (entrypoints/web/deps.py client_ip)
            "proxy_headers": False}
    if n == 1:
        try:
            uvicorn.run(create_app(s, container=c), **bind)
        finally:
            c.close()  # the bridge client's event loop thread would keep the process alive
        return
    c.close()
    # Each process builds its own container from the same environment (and the
    # secrets file written above); uvicorn restarts a process that dies.
    uvicorn.run("selfpay.entrypoints.web.app:create_app", factory=True, workers=n, **bind)


@app.command("worker")
def worker(
    once: Annotated[bool, typer.Option(help="One round, then exit")] = False,
) -> None:
    """Run the posting, reconcile and message loops without a web tier. Any number of
    workers (and `serve` processes with SELFPAY_RUN_WORKER=true) may run at once on any
    machines: rows are claimed with SKIP LOCKED under leases and fencing tokens."""
    import logging
    import signal
    import threading

    from selfpay.adapters.channels.sandbox import SandboxChannel
    from selfpay.adapters.db.listener import WakeListener
    from selfpay.adapters.worker_thread import WorkerThread
    from selfpay.bootstrap import build_embedded_agent
    from selfpay.services.worker import run_once

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    c = _container()
    s = c.settings
    work_orders = c.work_orders if c.work_orders.enabled else None
    try:
        if once:
            counts = run_once(c.payments, c.notifier, work_orders=work_orders,
                              devices=c.devices)
            out.print(" ".join(f"{k}={v}" for k, v in counts.items()))
            return
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        loop = WorkerThread(c.payments, c.notifier, work_orders=work_orders,
                            devices=c.devices, interval_s=s.worker_interval_s,
                            reconcile_interval_s=s.reconcile_interval_s)
        # The sandbox plays an outside payment platform; its notification deliveries
        # are background work too (a web tier with SELFPAY_RUN_WORKER=false skips them).
        sandbox = c.channels.get("sandbox")
        agent = build_embedded_agent(c)
        if agent is not None:
            agent.start()
        loop.start()
        # PostgreSQL: wake at once when a web process queues a posting or a message
        wake = (WakeListener(s.sqlalchemy_url, loop.wake)
                if WakeListener.supported(s.sqlalchemy_url) else None)
        if wake is not None:
            wake.start()
        if isinstance(sandbox, SandboxChannel):
            sandbox.start()
        out.print(f"worker running (every {s.worker_interval_s:g} s; reconcile every "
                  f"{s.reconcile_interval_s:g} s); Ctrl-C stops it")
        while not stop.wait(1.0):
            if not loop.running:  # pragma: no cover - the loop isolates its errors
                raise _fail("the worker loop ended unexpectedly")
        if wake is not None:
            wake.stop()
        loop.stop()
        if isinstance(sandbox, SandboxChannel):
            sandbox.stop()
        if agent is not None:
            agent.stop()
    finally:
        c.close()


@app.command("demo")
def demo(
    port: Annotated[int, typer.Option(help="HTTP port")] = 8000,
    data_dir: Annotated[Path, typer.Option(help="Where the SQLite file and batches go")] = Path(
        "selfpay-data"),
    no_serve: Annotated[bool, typer.Option(help="Set up and print, but do not start")] = False,
) -> None:
    """Everything in one process on embedded defaults: SQLite, demo data, a staff login."""
    import uvicorn

    from selfpay.entrypoints.web.app import create_app
    from selfpay.services import users
    from selfpay.services.demo import seed_demo

    # The web tier asks the ledger through the bridge, as across a DMZ, but over the
    # embedded queue (a table of the same SQLite file) to an agent in this process.
    overrides: dict[str, Any] = {"env": "demo", "data_dir": data_dir, "port": port,
                                 "transport": "embedded", "run_embedded_agent": True}
    if "SELFPAY_PUBLIC_BASE_URL" not in os.environ:
        overrides["public_base_url"] = f"http://127.0.0.1:{port}"
    if "SELFPAY_SMS_GATEWAY" not in os.environ:
        # the demo's phone is this terminal: staff see SMS codes masked, as in production
        overrides["sms_gateway"] = "terminal"
    c = _container(**overrides)
    s: Settings = c.settings
    with c.uow_factory() as uow:
        added, bills = seed_demo(uow)
    password = secrets.token_urlsafe(9)
    with c.uow_factory() as uow:
        users.set_demo_admin(uow, c.hasher, username="admin", password=password, now=_now())
        uow.commit()
    from selfpay.entrypoints.demo_kiosk import DEMO_DEVICE, DemoHeartbeat, enrol_demo_kiosk

    heartbeat = DemoHeartbeat(c.devices, enrol_demo_kiosk(c.devices))
    base = s.public_base_url
    table = Table(show_header=False, box=None)
    table.add_row("admin console", f"{base}/admin")
    table.add_row("demo kiosk", f"{base}/kiosk/{DEMO_DEVICE}  (enrolled in-process; a heartbeat "
                  "every 30 s keeps it online)")
    table.add_row("staff login", f"admin / {password}  (new password on every demo start)")
    if added:
        table.add_row("demo data", f"{added} accounts, {bills} open bills")
    table.add_row("data folder", str(s.data_dir.resolve()))
    table.add_row("billing", "built-in ledger, through the embedded bridge queue and an "
                  "in-process agent")
    if s.sms_gateway == "terminal":
        table.add_row("SMS codes", "短信验证码打印在本终端 (printed here: this terminal is the "
                      "demo's phone; the console shows them masked)")
    out.print(table)
    with c.uow_factory() as uow:
        first = uow.accounts.search(limit=1).items
    if first:
        a = first[0]
        payload = make_payload(c.code_base, c.keyring, a.biller, a.number)
        out.print(f"a customer's code opens: {payload}")
    try:
        if not no_serve:
            heartbeat.start()
            uvicorn.run(create_app(s, container=c), host=s.host, port=port, log_level="info")
    finally:
        heartbeat.stop()
        c.close()  # the bridge client's event loop thread


@app.command("agent")
def agent(
    once: Annotated[bool, typer.Option(help="Connect, check, and exit (for set-up checks)")] = (
        False
    ),
) -> None:
    """Run the intranet agent: connect out to the broker, answer billing requests."""
    import asyncio
    import logging
    import signal

    from selfpay.adapters.bridge import build_transport_factory, load_agent_billing_adapter
    from selfpay.adapters.bridge.agent import BridgeAgent
    from selfpay.services.bridge_ports import TransportError

    try:
        s = load_settings()
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    if s.transport == "none":
        raise _fail("SELFPAY_TRANSPORT is 'none': set it to 'stomp' (or 'embedded') for an agent")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if s.billing == "ledger":
        from selfpay.adapters.db.migrate import upgrade

        upgrade(s.sqlalchemy_url)
    billing = load_agent_billing_adapter(s)
    factory = build_transport_factory(s)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            async with factory() as transport:
                if once:
                    out.print(f"connected; consuming {s.bridge_request_queue} would start here")
                    return
                await BridgeAgent(transport, billing, request_queue=s.bridge_request_queue,
                                  prefetch=s.agent_prefetch, workers=s.agent_workers).run(stop)
        finally:
            aclose = getattr(billing, "aclose", None)  # an AsyncBillingSystem's client
            if aclose is not None:
                await aclose()

    try:
        asyncio.run(run())
    except TransportError as exc:
        raise _fail(str(exc)) from exc
    finally:
        close = getattr(billing, "close", None)
        if close is not None:
            close()


def main() -> None:
    try:
        app()
    except SettingsError as exc:  # any command: one line naming the setting, no traceback
        err.print(f"[red]{translate(_env_lang(), 'cli.bad_setting')}[/red]{escape(str(exc))}",
                  soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
