"""exec for real: the command runs inside the container's cgroups (its memory limit stops a
hog), with no capability the container's own init lacks, as a chosen user, in a chosen
directory, with the exit status passed through."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lxcforge.store import Store
from lxcforge.virt import Virt
from tests.integration.conftest import lxcforge, made_by_new


def inside(pool: Store, name: str, script: str, *options: str) -> tuple[int, str]:
    result = lxcforge(pool.root, "exec", *options, name, "--", "sh", "-c", script)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.smoke
def test_exec_runs_in_the_containers_cgroups_and_within_its_limits(
    minimal_store: Store, minimal_net: str, unique: str
) -> None:
    name = f"x{unique}"
    assert lxcforge(minimal_store.root, "new", name, "--network", minimal_net, "--memory", "64M",
                    "--privileged").returncode == 0
    # Every controller the container's init is in (pid 1 inside: the busybox base's init
    # stays in lxcforge-init's groups), the exec'd process is too. (Unprivileged: see
    # test_security.)
    _, own = inside(minimal_store, name, "cat /proc/self/cgroup")
    _, init = inside(minimal_store, name, "cat /proc/1/cgroup")
    controllers = {"memory", "cpu,cpuacct", "cpu", "cpuacct", "cpuset", "devices", "blkio", "pids", "name=systemd",
                   ""}  # "": the unified hierarchy (cgroup v2 hosts)
    mine = {line.split(":")[1]: line.split(":")[2] for line in own.splitlines() if line.count(":") >= 2}
    its = {line.split(":")[1]: line.split(":")[2] for line in init.splitlines() if line.count(":") >= 2}
    shared = controllers & set(its)
    assert shared and all(mine[c] == its[c] != "/" for c in shared), (own, init)
    # A memory hog far over the container's 64 MiB is stopped by the container's limit.
    status, output = inside(minimal_store, name, 'a=$(head -c 200000000 /dev/zero | tr "\\0" x); echo ${#a}')
    # (The OOM killer may pick exec's own nsenter, also in the container's cgroup, or the hog.)
    assert status in (137, -9) and "200000000" not in output, (status, output)


@pytest.mark.smoke
def test_exec_is_no_stronger_than_the_container(minimal_store: Store, minimal_net: str, unique: str) -> None:
    unprivileged, privileged = f"c{unique}", f"c{unique}-p"
    assert lxcforge(minimal_store.root, "new", unprivileged, "--network", minimal_net).returncode == 0
    assert lxcforge(minimal_store.root, "new", privileged, "--network", minimal_net, "--privileged").returncode == 0
    for name in (unprivileged, privileged):
        # Entering a user namespace restores a full bounding set: exec narrows it after that.
        _, bounds = inside(minimal_store, name, "grep CapBnd /proc/self/status /proc/1/status; id -u")
        values = {line.split()[-1] for line in bounds.splitlines() if "CapBnd" in line}
        assert len(values) == 1 and bounds.split()[-1] == "0", bounds  # init's bounding set, as root
        many = lxcforge(minimal_store.root, "exec", f"{name}*", "--json", "--", "grep", "CapBnd", "/proc/self/status")
        assert {r["stdout"].split()[-1] for r in json.loads(many.stdout)["results"] if r["name"] == name} == values
        status, output = inside(minimal_store, name, "mknod /tmp/blockdev b 7 0")
        assert status != 0 and "not permitted" in output  # as refused to the container's own root


def test_exec_user_directory_environment_and_exit_status(
    minimal_store: Store, minimal_net: str, unique: str
) -> None:
    name = f"u{unique}"
    assert lxcforge(minimal_store.root, "new", name, "--network", minimal_net).returncode == 0
    status, output = inside(minimal_store, name, 'id -u; pwd; echo "$GREETING"; exit 7',
                            "--user", "65534", "--cwd", "/tmp", "--env", "GREETING=hello")
    assert status == 7 and output.split() == ["65534", "/tmp", "hello"], output
    refused = lxcforge(minimal_store.root, "exec", "--env", "nonsense", name, "--", "true")
    assert refused.returncode == 1 and "NAME=VALUE" in refused.stderr
    stopped = lxcforge(minimal_store.root, "stop", name)
    assert stopped.returncode == 0
    not_running = lxcforge(minimal_store.root, "exec", name, "--", "true")
    assert not_running.returncode == 1 and "not running" in not_running.stderr and "hint:" in not_running.stderr


def test_exec_on_many_in_parallel_with_each_result_apart(
    minimal_store: Store, minimal_net: str, unique: str, virt: Virt
) -> None:
    prefix = f"m{unique}-"
    names = made_by_new(minimal_store.root, minimal_net, prefix, 6, "--memory", "64M", "--privileged")
    assert lxcforge(minimal_store.root, "stop", names[-1]).returncode == 0  # one that cannot run it

    text = lxcforge(minimal_store.root, "exec", f"{prefix}*", "--", "hostname")
    assert text.returncode == 1  # one failed
    for name in names[:-1]:
        assert f"{name} | {name}" in text.stdout.splitlines(), text.stdout
    assert "5 of 6 succeeded" in text.stderr and names[-1] in text.stderr.splitlines()[-1]

    result = lxcforge(minimal_store.root, "exec", ",".join(names[:-1]), "--json", "-j", "3", "--",
                      "sh", "-c", 'cat /proc/self/cgroup; grep CapBnd /proc/self/status; [ "$(hostname)" != '
                      f'{names[0]} ] || exit 3')
    document = json.loads(result.stdout)
    assert result.returncode == 1 and document["total"] == 5 and document["succeeded"] == 4
    by_name = {r["name"]: r for r in document["results"]}
    assert by_name[names[0]]["status"] == 3 and all(by_name[n]["status"] == 0 for n in names[1:-1])
    for name in names[:-1]:
        inside_memory = next(line for line in by_name[name]["stdout"].splitlines() if ":memory:" in line)
        assert inside_memory.endswith(f"-{name}.libvirt-lxc/container"), inside_memory  # that container's own group
    bounds = {line.split()[-1] for r in document["results"] for line in r["stdout"].splitlines() if "CapBnd" in line}
    assert len(bounds) == 1 and bounds != {"000001ffffffffff"}


def _cgroup_value(name: str, controller: str, setting: str) -> str:
    found = list(Path(f"/sys/fs/cgroup/{controller}/machine").glob(f"lxc-*-{name}.libvirt-lxc/{setting}"))
    assert len(found) == 1, found
    return found[0].read_text().strip()


def test_set_changes_limits_live_and_for_the_next_start(
    minimal_store: Store, minimal_net: str, unique: str, virt: Virt
) -> None:
    name = f"l{unique}"
    assert lxcforge(minimal_store.root, "new", name, "--network", minimal_net, "--memory", "64M").returncode == 0
    assert lxcforge(minimal_store.root, "set", name, "--memory", "48M", "--cpus", "0.5").returncode == 0
    assert _cgroup_value(name, "memory", "memory.limit_in_bytes") == str(48 * 1024**2)  # live
    assert _cgroup_value(name, "cpu", "cpu.cfs_quota_us") == "50000"
    # More than it started with: kept, applied at the next start, and said so.
    raised = lxcforge(minimal_store.root, "set", name, "--memory", "256M", "--cpus", "0")
    assert raised.returncode == 0 and "next start" in raised.stderr
    assert _cgroup_value(name, "cpu", "cpu.cfs_quota_us") == "-1"
    assert lxcforge(minimal_store.root, "restart", name).returncode == 0
    assert _cgroup_value(name, "memory", "memory.limit_in_bytes") == str(256 * 1024**2)
    info = json.loads(lxcforge(minimal_store.root, "info", name, "--json").stdout)
    assert info["memory_bytes"] == 256 * 1024**2
    refused = lxcforge(minimal_store.root, "set", name, "--memory", "lots")
    assert refused.returncode == 1 and "not a size" in refused.stderr


def test_exec_terminal_choices_and_output_formats(
    minimal_store: Store, minimal_net: str, unique: str
) -> None:
    name = f"t{unique}"
    assert lxcforge(minimal_store.root, "new", name, "--network", minimal_net).returncode == 0
    probe = "[ -t 0 ] && echo tty || echo notty; exit 3"
    plain = lxcforge(minimal_store.root, "exec", name, "--", "sh", "-c", probe)
    assert (plain.returncode, plain.stdout.strip()) == (3, "notty")  # stdin is no terminal: none given
    forced = lxcforge(minimal_store.root, "exec", "-t", name, "--", "sh", "-c", probe)
    assert (forced.returncode, forced.stdout.strip()) == (3, "tty")
    # Under a terminal (script(1) gives one): a terminal by default, none with -T.
    command = f"{sys.executable} -m lxcforge --store {minimal_store.root} exec %s {name} -- sh -c '{probe}'"
    for flag, expected in (("", "tty"), ("-T", "notty")):
        shown = subprocess.run(["script", "-qec", command % flag, "/dev/null"], capture_output=True, text=True,
                               env={**os.environ, "LXCFORGE_CONFIG": "/nonexistent"})
        assert shown.returncode == 3 and shown.stdout.strip().endswith(expected), (flag, shown.stdout)

    names = lxcforge(minimal_store.root, "list", "--format", "names")
    assert names.stdout.split() == [name]
    rows = list(csv.DictReader(io.StringIO(lxcforge(minimal_store.root, "list", "--format", "csv").stdout)))
    assert [r["name"] for r in rows] == [name] and rows[0]["state"] == "running"
    ran = lxcforge(minimal_store.root, "exec", name, "--format", "csv", "--", "hostname")
    rows = list(csv.DictReader(io.StringIO(ran.stdout)))
    assert rows[0]["name"] == name and rows[0]["status"] == "0" and rows[0]["stdout"].strip() == name
