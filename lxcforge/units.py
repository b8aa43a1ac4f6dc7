"""Sizes as operators read them (binary units), for every table lxcforge prints."""

from __future__ import annotations


def human_bytes(value: float | None, missing: str = "?") -> str:
    """'512 B', '1.5 KiB', '12.0 MiB' ...; missing for an unknown size."""
    if value is None:
        return missing
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
