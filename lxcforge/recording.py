"""A bulk command's timings as data (--report FILE): when the command started, each
container's steps on the wall clock, the host's facts at the start and the end; written with
lxcforge/timeline.py, drawn by `lxcforge report`. Also where a command's own start is taken
from, so the summary line times the whole command, not just its parallel part."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

# timeline is loaded only with --report: exec and the bulk commands make a Recorder on every call.
if TYPE_CHECKING:
    from lxcforge import timeline


def process_started() -> float:
    """When this process started (epoch seconds): the kernel's count, so the interpreter's own
    start-up and imports are inside every figure a command prints."""
    try:
        # starttime counts clock ticks since boot on the boot-time clock (/proc/stat's btime is
        # whole seconds: too coarse).
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - age
    except (OSError, ValueError, IndexError):
        return time.time()


@dataclass
class Recorder:
    """Collects one command's timings; write() produces the file."""

    path: Path | None
    action: str
    started: float = field(default_factory=process_started)
    host_start: timeline.HostFacts | None = None
    containers: list[timeline.ContainerRun] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.path is not None:
            from lxcforge import timeline

            timeline.check_format(self.path)  # refuse a bad extension before any work
            self.host_start = timeline.host_facts()

    def add(self, name: str, ok: bool, error: str | None, steps: Sequence[tuple[str, float, float]]) -> None:
        if self.path is None:
            return
        from lxcforge import timeline

        end = steps[-1][2] if steps else time.time()
        start = steps[0][1] if steps else end
        self.containers.append(timeline.ContainerRun(name, ok, error, start, end,
                                                     tuple(timeline.Step(*s) for s in steps)))

    def write(self) -> None:
        if self.path is None or self.host_start is None:
            return
        from lxcforge import timeline

        run = timeline.Run(self.action, self.started, time.time(), self.host_start, timeline.host_facts(),
                           tuple(sorted(self.containers, key=lambda c: (c.start, c.name))),
                           command=("lxcforge", *sys.argv[1:]))
        timeline.write(self.path, run)
