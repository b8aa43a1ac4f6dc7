"""The known ways out of a container, tried from inside real containers: a default one
(unprivileged: a user namespace), a privileged one (hardened: its own cgroup namespace below
libvirt's groups, a narrow capability set) and one made the way libvirt's defaults alone
would make it, where they succeed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lxcforge.store import Store
from tests.integration.conftest import lxcforge

PROBES = Path(__file__).parent.parent / "support" / "escape_probes.sh"
ALL_PROBES = {"cgroup-host-root", "release-agent", "raw-block-device", "proc-sys", "kernel-module", "bpf-load",
              "raw-io", "risky-capabilities", "open-by-handle", "ptrace-other-user"}
# Root in a privileged container holds CAP_SYS_ADMIN in the host's user namespace (systemd
# cannot boot without it), and libvirt's LXC driver has no seccomp filter and this host no
# LSM: it can mount a fresh procfs (its /proc/sys is the host's) and load BPF programs. Only
# a user namespace closes these (README: security model).
OPEN_WHEN_PRIVILEGED = {"proc-sys", "bpf-load"}
# What the hardening closes, shown open in a container without it.
CLOSED_BY_HARDENING = {"cgroup-host-root", "release-agent", "raw-block-device", "risky-capabilities",
                       "open-by-handle", "ptrace-other-user"}

# The init wrapper as it was before the hardening: systemd's own name=systemd group, nothing else.
# (On a cgroup v2 host, nothing: libvirt's scope is the container's.)
UNHARDENED_WRAPPER = """#!/bin/sh
if [ -d /sys/fs/cgroup/systemd ]; then
    own="/sys/fs/cgroup/systemd/lxcforge/${LIBVIRT_LXC_UUID:-$$}"
    mkdir -p "$own" && echo $$ > "$own/cgroup.procs"
    exec /sbin/init "$@" systemd.legacy_systemd_cgroup_controller=1
fi
exec /sbin/init "$@"
"""


def probe(pool: Store, name: str) -> dict[str, str]:
    ran = lxcforge(pool.root, "exec", name, "--", "sh", "-c", PROBES.read_text())
    results = {}
    for line in ran.stdout.splitlines():
        probe_name, state, _detail = line.split(" ", 2)
        results[probe_name] = state.rstrip(":")
    # A probe that did not run says nothing: every one must have reported.
    assert set(results) == ALL_PROBES, ran.stdout + ran.stderr
    return results


def opened(results: dict[str, str]) -> set[str]:
    return {name for name, state in results.items() if state == "open"}


@pytest.mark.smoke
def test_escape_probes_fail_in_a_default_container_and_succeed_without_the_hardening(
    cached_pool: Store, debian_base: str, session_network: str, containers: list[str], unique: str
) -> None:
    default, hardened, plain = f"t{unique}-def", f"t{unique}-hard", f"t{unique}-plain"
    containers += [default, hardened, plain]
    made = lxcforge(cached_pool.root, "new", default, "--base", debian_base, "--network", session_network)
    assert made.returncode == 0, made.stderr
    made = lxcforge(cached_pool.root, "new", hardened, plain, "--base", debian_base, "--network", session_network,
                    "--privileged")
    assert made.returncode == 0, made.stderr
    for name in (default, hardened):
        state = lxcforge(cached_pool.root, "exec", name, "--", "systemctl", "is-system-running", "--wait")
        assert state.stdout.strip() == "running", name + ": " + state.stdout + state.stderr

    assert opened(probe(cached_pool, default)) == set()
    assert opened(probe(cached_pool, hardened)) == OPEN_WHEN_PRIVILEGED

    # The privileged one as libvirt's defaults make it: no capability policy, the host's
    # cgroup hierarchies as libvirt bind-mounts them.
    (cached_pool.container_path(plain) / "usr/sbin/lxcforge-init").write_text(UNHARDENED_WRAPPER)
    xml = subprocess.run(["virsh", "-c", "lxc:///", "dumpxml", "--inactive", plain], capture_output=True,
                         text=True, check=True).stdout
    start, end = xml.index("<features>"), xml.index("</features>") + len("</features>")
    defined = subprocess.run(["virsh", "-c", "lxc:///", "define", "/dev/stdin"], input=xml[:start] + xml[end:],
                             capture_output=True, text=True)
    assert defined.returncode == 0, defined.stderr
    assert lxcforge(cached_pool.root, "restart", plain).returncode == 0
    lxcforge(cached_pool.root, "exec", plain, "--", "systemctl", "is-system-running", "--wait")
    assert opened(probe(cached_pool, plain)) >= closed_by_hardening_here() | OPEN_WHEN_PRIVILEGED


def closed_by_hardening_here() -> set[str]:
    # A cgroup v2 host has no v1 hierarchy, so no release_agent to reach, hardened or not.
    unified = Path("/sys/fs/cgroup/cgroup.controllers").exists()
    return CLOSED_BY_HARDENING - {"release-agent"} if unified else CLOSED_BY_HARDENING


def test_a_container_cannot_raise_the_limits_libvirt_set(
    cached_pool: Store, debian_base: str, session_network: str, containers: list[str], unique: str
) -> None:
    name = f"t{unique}-lim"
    containers.append(name)
    made = lxcforge(cached_pool.root, "new", name, "--base", debian_base, "--network", session_network,
                    "--memory", "128M", "--privileged")
    assert made.returncode == 0, made.stderr
    # The root of the container's memory hierarchy is its own group, below libvirt's: raising
    # the limit there changes nothing libvirt set, and the device list cannot be widened.
    script = ("own() { sed -n \"s/^[0-9]*:$1://p\" /proc/self/cgroup; }; "
              "echo 4G > /sys/fs/cgroup/memory$(own memory)/memory.limit_in_bytes; "
              "echo a > /sys/fs/cgroup/devices$(own devices)/devices.allow 2>/dev/null && echo widened; "
              'a=$(head -c 300000000 /dev/zero | tr "\\0" x); echo survived')
    ran = lxcforge(cached_pool.root, "exec", name, "--", "sh", "-c", script)
    assert "widened" not in ran.stdout
    assert "survived" not in ran.stdout or ran.returncode != 0, ran.stdout  # the 128M limit still holds


def test_a_default_container_is_unprivileged_and_runs_inside_its_cgroups(
    cached_pool: Store, debian_base: str, session_network: str, containers: list[str], unique: str
) -> None:
    first, second = f"t{unique}-u1", f"t{unique}-u2"
    containers += [first, second]
    made = lxcforge(cached_pool.root, "new", first, second, "--base", debian_base, "--network", session_network)
    assert made.returncode == 0, made.stderr
    state = lxcforge(cached_pool.root, "exec", first, "--", "systemctl", "is-system-running", "--wait")
    assert state.stdout.strip() == "running", state.stdout + state.stderr
    uid_map = lxcforge(cached_pool.root, "exec", first, "--", "cat", "/proc/self/uid_map").stdout.split()
    assert uid_map == ["0", "100000", "65536"]
    # Commands run in it, one container or many, are inside its cgroups (its limits apply).
    for target in (first, f"t{unique}-u*"):
        groups = lxcforge(cached_pool.root, "exec", target, "--", "cat", "/proc/self/cgroup").stdout
        assert ":memory:" in groups and "/.." not in groups, groups
    # Root inside is uid 100000 on the host; what the fix-ups wrote belongs to it too.
    assert (cached_pool.container_path(first) / "etc/hostname").stat().st_uid == 100000
    assert (cached_pool.container_path(first) / "usr/bin").stat().st_uid == 100000
    # Both are snapshots of one shifted copy of the base.
    assert len([p for p in cached_pool.shifted.iterdir() if p.name.startswith(f"{debian_base}@100000.")]) == 1
