import datetime as dt

import pytest

from selfpay.config import Settings
from selfpay.entrypoints.web.templating import make_templates


def test_times_stored_in_utc_are_shown_in_the_configured_zone():
    when = make_templates("Asia/Shanghai").env.filters["when"]
    assert when(dt.datetime(2026, 1, 1, 0, 30, tzinfo=dt.UTC)) == "2026-01-01 08:30:00"
    assert make_templates("UTC").env.filters["when"](
        dt.datetime(2026, 1, 1, 0, 30, tzinfo=dt.UTC)) == "2026-01-01 00:30:00"


def test_an_unknown_time_zone_is_refused():
    with pytest.raises(ValueError, match="time zone"):
        Settings(timezone="Mars/Olympus")
