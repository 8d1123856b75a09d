"""Database adapters. Importing the package registers every table in tables.metadata."""

from selfpay.adapters.db import bridge_tables as bridge_tables  # noqa: F401
