"""Named fault-injection points, for the tests that kill lxcforge mid-operation.

Each step that leaves state behind (a subvolume, a domain, a reservation, a file) calls
`point("new.snapshot")` right after it. With LXCFORGE_FAULT=STEP (or STEP@N: the Nth time
this process reaches STEP) set, lxcforge SIGKILLs itself there: no undo, no finally, exactly
what an OOM kill, a CI timeout or a dropped SSH session does. Without the variable a point
costs one dictionary lookup."""

from __future__ import annotations

import os
import signal
import threading

ENV = "LXCFORGE_FAULT"

# Every point lxcforge has, in the order an operation reaches them; the tests walk this list.
NEW_STEPS = ("new.locked", "new.reclaimed", "new.hostsfile", "new.reserved", "new.snapshot", "new.fixups",
             "new.defined", "new.started", "new.leased")
DESTROY_STEPS = ("destroy.killed", "destroy.undefined", "destroy.released", "destroy.deleted")
BASE_STEPS = ("base.tmp", "base.installed", "base.published")
# `base import`: a tuple of its own, since a build never reaches it (tests walk BASE_STEPS
# with a build).
IMPORT_STEPS = ("base.received",)
# `new` (unprivileged), the first time a base is used with an id range: its shifted copy.
SHIFT_STEPS = ("new.shifted",)
# `new` when only addresses dnsmasq still holds for destroyed containers are left: its reload.
FORGET_STEPS = ("new.forgotten",)
POINTS = NEW_STEPS + DESTROY_STEPS + BASE_STEPS + IMPORT_STEPS + SHIFT_STEPS + FORGET_STEPS

_lock = threading.Lock()
_hits: dict[str, int] = {}


def _wanted() -> tuple[str, int] | None:
    spec = os.environ.get(ENV)
    if not spec:
        return None
    step, _, count = spec.partition("@")
    return step, int(count) if count else 1


def point(step: str) -> None:
    """Die here if LXCFORGE_FAULT names this step (and this is the Nth time)."""
    wanted = _wanted()
    if wanted is None or wanted[0] != step:
        return
    with _lock:
        _hits[step] = _hits.get(step, 0) + 1
        if _hits[step] == wanted[1]:
            os.kill(os.getpid(), signal.SIGKILL)
