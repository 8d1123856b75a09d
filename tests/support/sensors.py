"""Sensor plug-ins for the kiosk agent's tests, loaded through real entry points
(importlib.metadata.EntryPoint objects naming these functions)."""

from __future__ import annotations


def read_cabinet() -> dict[str, float]:
    return {"temp_c": 24.5, "humidity_pct": 41.0}


def read_broken() -> dict[str, float]:
    raise OSError("the I2C bus does not answer")


def read_impossible() -> dict[str, float]:
    return {"temp_c": 500.0, "humidity_pct": 40.0}  # a broken sensor, not a fire
