"""Names of containers, bases and networks: hostname rules, so nothing can become a path."""

from __future__ import annotations

import re

from lxcforge.errors import InvalidName

MAX_LENGTH = 63
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
# Bases may carry a dot for versions (e.g. "fedora-39", "ubuntu-24.04").
_BASE = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")


def validate_container_name(name: str) -> str:
    """Return name if it is a valid hostname label (RFC 1123), else raise InvalidName."""
    _check(name, _LABEL, "container", "lower-case letters, digits and '-', not starting or ending with '-'")
    return name


def validate_base_name(name: str) -> str:
    _check(name, _BASE, "base", "lower-case letters, digits, '-' and '.', e.g. fedora-39")
    if ".." in name:
        raise InvalidName(f"invalid base name {name!r}: '..' is not allowed", hint="use e.g. fedora-39")
    return name


def validate_network_name(name: str) -> str:
    _check(name, _LABEL, "network", "lower-case letters, digits and '-'")
    if len(name) > 15:
        # The bridge is named after the network and Linux interface names are at most 15 bytes.
        raise InvalidName(f"invalid network name {name!r}: longer than 15 characters",
                          hint="choose a shorter name")
    return name


def _check(name: str, pattern: re.Pattern[str], what: str, rule: str) -> None:
    if not name:
        raise InvalidName(f"invalid {what} name: empty", hint=f"use {rule}")
    if len(name) > MAX_LENGTH:
        raise InvalidName(
            f"invalid {what} name {name[:20]!r}...: {len(name)} characters, at most {MAX_LENGTH}",
            hint="choose a shorter name",
        )
    if not pattern.match(name):
        raise InvalidName(f"invalid {what} name {name!r}", hint=f"use {rule}")
