"""The kiosk fleet in the staff console (设备 / Devices): the registry, enrolment codes and
revocation, a live list with the last readings, open alarms and maintenance.

Everyone signed in may look; operators also acknowledge alarms and tick maintenance
done; only admins register, change, enrol and revoke. Every change goes through
`container.devices` (services/devices.py), which audits it in the same transaction.

An enrolment code is shown once: in the answer to the POST that issued it, with
Cache-Control: no-store, never in a URL, a cookie or the session. The page then
replaces its history entry with the device's page, so a reload shows the device, not
the code.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from selfpay.bootstrap import Container
from selfpay.domain.accounts import Biller
from selfpay.domain.devices import (
    DISK_MIN_FREE_PCT,
    HUMIDITY_MAX_PCT,
    TEMP_RANGE_C,
    Alarm,
    AlarmKind,
    Device,
    DeviceState,
    MaintenanceTask,
    Printer,
    Ups,
)
from selfpay.domain.errors import DomainError, InvalidInput
from selfpay.entrypoints.web.auth import utcnow
from selfpay.entrypoints.web.deps import (
    Admin,
    ContainerDep,
    CsrfChecked,
    Operator,
    Viewer,
    client_ip,
    flash,
    render,
)
from selfpay.entrypoints.web.i18n import error_text, request_lang, translate
from selfpay.services.devices import ENROL_TTL

router = APIRouter(prefix="/admin", include_in_schema=False)

Text = Annotated[str, Form(max_length=256)]
Note = Annotated[str, Form(max_length=500)]
LIVE_EVERY_S = 15  # how often the list asks for fresh state
DUE_SOON = dt.timedelta(days=7)  # the fleet-wide list: overdue, and due within a week
BANNER_ALARMS = 5  # the dashboard's banner names this many


# --- view models -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reading:
    """One reading as shown: a label key, the value in the page's language, and whether
    it is out of range (shown in red)."""

    key: str
    text: str
    bad: bool = False


@dataclass(slots=True)
class FleetRow:
    device: Device
    status: str  # online | offline | registered | revoked
    seen_ago: str
    readings: dict[str, Reading]  # by key: temp, humidity, ups, printer, disk, version
    alarms: int
    standby: Device | None = None  # shown while this one is offline
    standby_status: str = ""


@dataclass(slots=True)
class Fleet:
    rows: list[FleetRow]
    counts: dict[str, int]
    chart: list[dict[str, Any]] = field(default_factory=list)


def device_status(device: Device, now: dt.datetime) -> str:
    """What staff need to know first: is it serving customers?"""
    if device.state is DeviceState.ENROLLED:
        return "online" if device.online(now) else "offline"
    return device.state.value


def ago(lang: str, then: dt.datetime | None, now: dt.datetime) -> str:
    """'3 分钟前' / '3 min ago'; '从未' / 'never' when there is no time."""
    if then is None:
        return translate(lang, "devices.never")
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return translate(lang, f"devices.ago_{unit}", n=seconds // size)
    return translate(lang, "devices.ago_now")


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


def readings_of(lang: str, readings: dict[str, Any]) -> list[Reading]:
    """The last heartbeat's readings in the list's order, each checked against the same
    thresholds that raise alarms (domain/devices.py), so red here means an alarm."""
    out: list[Reading] = []
    if not readings:
        return out  # no heartbeat yet: nothing is known, not "unknown"
    temp = _num(readings.get("temp_c"))
    if temp is not None:
        low, high = TEMP_RANGE_C
        out.append(Reading("temp", f"{temp:.1f} °C", not low <= temp <= high))
    humidity = _num(readings.get("humidity_pct"))
    if humidity is not None:
        out.append(Reading("humidity", f"{humidity:.0f} %", humidity > HUMIDITY_MAX_PCT))
    ups = str(readings.get("ups", "")) or Ups.UNKNOWN.value
    if ups in {u.value for u in Ups}:
        charge = _num(readings.get("ups_charge_pct"))
        text = translate(lang, f"devices.ups.{ups}") + (f" {charge:.0f} %" if charge is not None
                                                         else "")
        out.append(Reading("ups", text, ups in (Ups.ON_BATTERY, Ups.LOW_BATTERY)))
    printer = str(readings.get("printer", "")) or Printer.UNKNOWN.value
    if printer in {p.value for p in Printer}:
        out.append(Reading("printer", translate(lang, f"devices.printer.{printer}"),
                           printer not in (Printer.OK, Printer.UNKNOWN)))
    disk = _num(readings.get("disk_free_pct"))
    if disk is not None:
        out.append(Reading("disk", f"{disk:.0f} %", disk < DISK_MIN_FREE_PCT))
    version = readings.get("app_version")
    if isinstance(version, str) and version:
        out.append(Reading("version", version))
    return out


def state_chart(counts: dict[str, int], *, width: int = 560, bar_h: int = 26, gap: int = 10,
                label_w: int = 110) -> list[dict[str, Any]]:
    """Geometry of the fleet's state as horizontal bars (online, offline, with an open
    alarm), drawn as inline SVG like the dashboard's chart."""
    keys = ("online", "offline", "alarm")
    peak = max((counts[k] for k in keys), default=0) or 1
    usable = width - label_w - 60
    return [{"key": k, "n": counts[k], "y": i * (bar_h + gap), "h": bar_h, "x": label_w,
             "track": usable, "w": max(2, round(usable * counts[k] / peak)) if counts[k] else 0}
            for i, k in enumerate(keys)]


def fleet_of(container: Container, lang: str, now: dt.datetime) -> Fleet:
    """Every device with its state, readings and open alarm count; the counts of the
    fleet; the chart. One read transaction."""
    with container.read_uow_factory() as uow:
        devices = uow.devices.all()
        open_alarms = uow.alarms.open(limit=1000)
    per_device: dict[str, int] = {}
    for alarm in open_alarms:
        per_device[alarm.device_id] = per_device.get(alarm.device_id, 0) + 1
    by_id = {d.device_id: d for d in devices}
    rows = []
    for device in devices:
        status = device_status(device, now)
        standby = by_id.get(device.standby) if status == "offline" else None
        rows.append(FleetRow(device, status, ago(lang, device.last_seen_at, now),
                             {x.key: x for x in readings_of(lang, device.readings)},
                             per_device.get(device.device_id, 0), standby,
                             device_status(standby, now) if standby else ""))
    counts = {k: sum(1 for r in rows if r.status == k)
              for k in ("online", "offline", "registered", "revoked")}
    counts["alarm"] = sum(1 for r in rows if r.alarms)
    counts["total"] = len(rows)
    counts["open_alarms"] = len(open_alarms)
    return Fleet(rows, counts, state_chart(counts))


def alarm_detail(lang: str, alarm: Alarm, when: Callable[[dt.datetime], str]) -> str:
    """The alarm's detail for staff: an offline alarm's last-seen time in local time, a
    count of failed payments as a sentence; the reading as it came otherwise."""
    if alarm.kind is AlarmKind.OFFLINE:
        if alarm.detail == "never":
            return translate(lang, "alarms.detail.never_seen")
        try:
            seen = dt.datetime.fromisoformat(alarm.detail)
        except ValueError:
            return alarm.detail
        return translate(lang, "alarms.detail.last_seen", at=when(seen))
    if alarm.kind is AlarmKind.PAYMENT_FAILURES:
        return translate(lang, "alarms.detail.failures", n=alarm.detail)
    if alarm.kind in (AlarmKind.PAPER_LOW, AlarmKind.PAPER_OUT, AlarmKind.COVER_OPEN,
                      AlarmKind.PRINTER_OFFLINE):
        return ""  # the kind says it all
    return alarm.detail


@dataclass(frozen=True, slots=True)
class AlarmBanner:
    """Open alarms for the dashboard: how many, and the newest few."""

    total: int
    latest: list[Alarm]


def alarm_banner(container: Container) -> AlarmBanner:
    """The dashboard's banner of open device alarms (admin/dashboard.py adds it)."""
    with container.read_uow_factory() as uow:
        alarms = uow.alarms.open(limit=1000)
    return AlarmBanner(len(alarms), alarms[:BANNER_ALARMS])


def _when(request: Request) -> Callable[[dt.datetime], str]:
    fn: Callable[[dt.datetime], str] = request.app.state.templates.env.filters["when"]
    return fn


def _billers(container: Container) -> list[Biller]:
    with container.read_uow_factory() as uow:
        return uow.billers.list()


# --- the list ------------------------------------------------------------------------------


def _form_of(device: Device | None) -> dict[str, Any]:
    if device is None:
        return {"device_id": "", "name": "", "site": "", "location": "", "billers": [],
                "elderly_default": False, "standby": ""}
    return {"device_id": device.device_id, "name": device.name, "site": device.site,
            "location": device.location, "billers": list(device.billers),
            "elderly_default": device.elderly_default, "standby": device.standby}


def _list_page(request: Request, container: Container, *, error: str = "",
               form: dict[str, Any] | None = None, status: int = 200) -> Response:
    lang = request_lang(request)
    fleet = fleet_of(container, lang, utcnow())
    return render(request, "admin/devices.html", {
        "fleet": fleet, "live_every_s": LIVE_EVERY_S, "billers": _billers(container),
        "form": form or _form_of(None), "error": error,
        "all_devices": [r.device for r in fleet.rows],
    }, status_code=status)


@router.get("/devices", name="devices")
def devices_page(request: Request, container: ContainerDep, user: Viewer) -> Response:
    return _list_page(request, container)


@router.get("/devices/live.json", name="devices_live")
def devices_live(request: Request, container: ContainerDep, user: Viewer) -> Response:
    """What the list's script polls: the counts, each device's status, and the live part
    of the page rendered by the same template (so the page and the poll never differ)."""
    lang = request_lang(request)
    now = utcnow()
    fleet = fleet_of(container, lang, now)
    env = request.app.state.templates.env
    html = env.get_template("admin/_fleet.html").render(fleet=fleet, lang=lang)
    return JSONResponse({
        "at": now.isoformat(), "counts": fleet.counts,
        "devices": [{"device_id": r.device.device_id, "status": r.status,
                     "last_seen_at": r.device.last_seen_at.isoformat()
                     if r.device.last_seen_at else None, "alarms": r.alarms,
                     "readings": r.device.readings} for r in fleet.rows],
        "html": html,
    }, headers={"Cache-Control": "no-store"})


def _register_fields(name: str, site: str, location: str, billers: list[str],
                     elderly_default: str, standby: str) -> dict[str, Any]:
    return {"name": name, "site": site, "location": location, "billers": billers,
            "elderly_default": bool(elderly_default), "standby": standby}


@router.post("/devices", dependencies=[CsrfChecked])
def register_device(
    request: Request, container: ContainerDep, user: Admin, device_id: Text = "",
    name: Text = "", site: Text = "", location: Text = "",
    billers: Annotated[list[str] | None, Form(max_length=64)] = None,
    elderly_default: Text = "", standby: Text = "",
) -> Response:
    fields = _register_fields(name, site, location, billers or [], elderly_default, standby)
    try:
        device = container.devices.register(actor=user.username, ip=client_ip(request),
                                            device_id=device_id, **fields)
    except InvalidInput as exc:
        return _list_page(request, container, error=error_text(exc, request_lang(request)),
                          form={"device_id": device_id, **fields}, status=400)
    flash(request, translate(request_lang(request), "devices.added_flash",
                             device=device.device_id), "success")
    return RedirectResponse(f"/admin/devices/{device.device_id}", status_code=303)


# --- one device -------------------------------------------------------------------------


def _device_page(request: Request, container: Container, device: Device, *,
                 error: str = "", form: dict[str, Any] | None = None,
                 status: int = 200) -> Response:
    lang = request_lang(request)
    now = utcnow()
    with container.read_uow_factory() as uow:
        alarms = uow.alarms.recent(device.device_id, limit=20)
        tasks = uow.maintenance.for_device(device.device_id)
        others = [d for d in uow.devices.all() if d.device_id != device.device_id]
        standby = uow.devices.get(device.standby) if device.standby else None
    when = _when(request)
    return render(request, "admin/device.html", {
        "device": device, "status": device_status(device, now),
        "seen_ago": ago(lang, device.last_seen_at, now),
        "readings": readings_of(lang, device.readings),
        "alarms": alarms, "details": {a.id: alarm_detail(lang, a, when) for a in alarms},
        "tasks": tasks, "now": now, "others": others, "billers": _billers(container),
        "standby": standby, "standby_status": device_status(standby, now) if standby else "",
        "form": form or _form_of(device), "error": error,
    }, status_code=status)


@router.get("/devices/{device_id}", name="device")
def device_page(request: Request, device_id: str, container: ContainerDep,
                user: Viewer) -> Response:
    found = container.devices.get(device_id)  # 404 page (app.py) when there is none
    return _device_page(request, container, found)


@router.post("/devices/{device_id}", dependencies=[CsrfChecked])
def change_device(
    request: Request, device_id: str, container: ContainerDep, user: Admin,
    name: Text = "", site: Text = "", location: Text = "",
    billers: Annotated[list[str] | None, Form(max_length=64)] = None,
    elderly_default: Text = "", standby: Text = "",
) -> Response:
    found = container.devices.get(device_id)  # 404 page (app.py) when there is none
    fields = _register_fields(name, site, location, billers or [], elderly_default, standby)
    try:
        device = container.devices.update(found.device_id, actor=user.username,
                                          ip=client_ip(request), **fields)
    except InvalidInput as exc:
        return _device_page(request, container, found,
                            error=error_text(exc, request_lang(request)),
                            form={"device_id": found.device_id, **fields}, status=400)
    flash(request, translate(request_lang(request), "devices.saved_flash",
                             device=device.device_id), "success")
    return RedirectResponse(f"/admin/devices/{device.device_id}", status_code=303)


@router.post("/devices/{device_id}/enrolment-code", dependencies=[CsrfChecked])
def issue_code(request: Request, device_id: str, container: ContainerDep,
               user: Admin) -> Response:
    """The code, once: in this answer only (no-store), with the terminal's command."""
    found = container.devices.get(device_id)  # 404 page (app.py) when there is none
    code = container.devices.issue_enrolment_code(found.device_id, actor=user.username,
                                                  ip=client_ip(request))
    server = container.settings.public_base_url.rstrip("/")
    response = render(request, "admin/enrol_code.html", {
        "device": found, "code": code, "expires_at": utcnow() + ENROL_TTL,
        "ttl_hours": int(ENROL_TTL.total_seconds() // 3600),
        "command": f"selfpay kiosk-agent enroll --server {server} "
                   f"--device {found.device_id} --code {code}",
    })
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


@router.post("/devices/{device_id}/revoke", dependencies=[CsrfChecked])
def revoke_device(request: Request, device_id: str, container: ContainerDep, user: Admin,
                  confirm: Text = "") -> Response:
    """Only with the confirmation box ticked: the terminal is refused at its next
    heartbeat, and customers at it see the standby partner."""
    lang = request_lang(request)
    found = container.devices.get(device_id)  # 404 page (app.py) when there is none
    if confirm != found.device_id:
        flash(request, translate(lang, "devices.revoke_unconfirmed"), "error")
        return RedirectResponse(f"/admin/devices/{found.device_id}", status_code=303)
    container.devices.revoke(found.device_id, actor=user.username, ip=client_ip(request))
    flash(request, translate(lang, "devices.revoked_flash", device=found.device_id), "success")
    return RedirectResponse(f"/admin/devices/{found.device_id}", status_code=303)


@router.post("/devices/{device_id}/tasks", dependencies=[CsrfChecked])
def add_task(request: Request, device_id: str, container: ContainerDep, user: Admin,
             title: Text = "", period_days: Text = "") -> Response:
    lang = request_lang(request)
    found = container.devices.get(device_id)  # 404 page (app.py) when there is none
    days = int(period_days) if period_days.strip().isdigit() and len(period_days) < 6 else -1
    try:
        container.devices.add_task(found.device_id, title=title, period_days=days,
                                   actor=user.username, ip=client_ip(request))
    except InvalidInput as exc:
        return _device_page(request, container, found, error=error_text(exc, lang),
                            status=400)
    flash(request, translate(lang, "maintenance.added_flash", title=title.strip()), "success")
    return RedirectResponse(f"/admin/devices/{found.device_id}#tasks", status_code=303)


# --- alarms and maintenance --------------------------------------------------------------


def _back(raw: str, default: str) -> str:
    """Where a form sends staff back to: a console path only (never another host)."""
    if raw.startswith("/admin/") and not raw.startswith(("//", "/\\")) and "\\" not in raw:
        return raw
    return default


@router.get("/alarms", name="alarms")
def alarms_page(request: Request, container: ContainerDep, user: Viewer) -> Response:
    lang = request_lang(request)
    with container.read_uow_factory() as uow:
        alarms = uow.alarms.open(limit=500)
        devices = {d.device_id: d for d in uow.devices.all()}
    when = _when(request)
    return render(request, "admin/alarms.html", {
        "alarms": alarms, "devices": devices,
        "details": {a.id: alarm_detail(lang, a, when) for a in alarms},
    })


@router.post("/alarms/{alarm_id}/ack", dependencies=[CsrfChecked])
def acknowledge(request: Request, alarm_id: int, container: ContainerDep, user: Operator,
                note: Note = "", back: Text = "") -> Response:
    lang = request_lang(request)
    try:
        alarm = container.devices.acknowledge(alarm_id, actor=user.username, note=note,
                                              ip=client_ip(request))
    except DomainError as exc:
        flash(request, error_text(exc, lang), "error")
        return RedirectResponse(_back(back, "/admin/alarms"), status_code=303)
    flash(request, translate(lang, "alarms.acked_flash", device=alarm.device_id,
                             kind=translate(lang, f"alarms.kind.{alarm.kind.value}")),
          "success")
    return RedirectResponse(_back(back, "/admin/alarms"), status_code=303)


@dataclass(frozen=True, slots=True)
class DueTask:
    task: MaintenanceTask
    device: Device | None
    overdue: bool


@router.get("/maintenance", name="maintenance")
def maintenance_page(request: Request, container: ContainerDep, user: Viewer) -> Response:
    """Every task overdue or due within DUE_SOON, soonest first; revoked devices left out."""
    now = utcnow()
    with container.read_uow_factory() as uow:
        tasks = uow.maintenance.all()
        devices = {d.device_id: d for d in uow.devices.all()}
    due = sorted((DueTask(task, devices.get(task.device_id), task.overdue(now))
                  for task in tasks if task.due_at() <= now + DUE_SOON
                  and (task.device_id not in devices
                       or devices[task.device_id].state is not DeviceState.REVOKED)),
                 key=lambda d: d.task.due_at())
    return render(request, "admin/maintenance.html", {"due": due, "now": now,
                                                      "soon_days": DUE_SOON.days})


@router.post("/maintenance/{task_id}/done", dependencies=[CsrfChecked])
def task_done(request: Request, task_id: int, container: ContainerDep, user: Operator,
              note: Note = "", back: Text = "") -> Response:
    lang = request_lang(request)
    try:
        task = container.devices.task_done(task_id, actor=user.username, note=note,
                                           ip=client_ip(request))
    except DomainError as exc:
        flash(request, error_text(exc, lang), "error")
        return RedirectResponse(_back(back, "/admin/maintenance"), status_code=303)
    flash(request, translate(lang, "maintenance.done_flash", title=task.title,
                             device=task.device_id), "success")
    return RedirectResponse(_back(back, "/admin/maintenance"), status_code=303)
