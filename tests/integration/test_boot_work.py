"""Work a container's systemd skips at every boot because of the base's fix-ups, shown on a
booted container, then shown done again once the fix-up is taken out of its rootfs."""

from __future__ import annotations

from pathlib import Path

from lxcforge.rootfs import fixups
from lxcforge.store import Store
from tests.integration.conftest import lxcforge
from tests.integration.test_containers import wait_running

SKIPPED = ("systemd-sysusers.service", "systemd-journal-flush.service", "systemd-remount-fs.service")


def new_running(pool: Store, base: str, net: str, containers: list[str], name: str) -> Path:
    """A container from base, booted to `running`; its rootfs, to take fix-ups out of."""
    containers.append(name)
    made = lxcforge(pool.root, "new", name, "--base", base, "--network", net, "--json")
    assert made.returncode == 0, made.stderr
    assert wait_running(pool, name) == "running"
    return pool.container_path(name)


def reboot(pool: Store, name: str) -> None:
    assert lxcforge(pool.root, "restart", name).returncode == 0
    assert wait_running(pool, name) == "running"


def ran_this_boot(pool: Store, name: str) -> dict[str, bool]:
    shown = lxcforge(pool.root, "exec", name, "--", "systemctl", "show", "--property",
                     "Id,ExecMainStartTimestampMonotonic", *SKIPPED).stdout
    ran = {}
    for block in shown.strip().split("\n\n"):  # one block per unit, properties in any order
        props = dict(line.partition("=")[::2] for line in block.splitlines())
        ran[props["Id"]] = props["ExecMainStartTimestampMonotonic"] not in ("", "0")
    return ran


def test_units_with_nothing_to_do_in_a_container_do_not_run(
    cached_pool: Store, debian_base: str, session_network: str, containers: list[str], unique: str
) -> None:
    name = f"t{unique}-boot"
    rootfs = new_running(cached_pool, debian_base, session_network, containers, name)
    assert ran_this_boot(cached_pool, name) == {unit: False for unit in SKIPPED}

    # Without the update stamps and the masks, each of them runs at every boot.
    for stamp in fixups.UPDATE_STAMPS:
        (rootfs / stamp.lstrip("/")).unlink()
    for unit in ("systemd-journal-flush.service", "systemd-remount-fs.service"):
        (rootfs / "etc/systemd/system" / unit).unlink()
    reboot(cached_pool, name)
    assert ran_this_boot(cached_pool, name) == {unit: True for unit in SKIPPED}


def boot_work(pool: Store, name: str) -> dict[str, object]:
    """What the second set of fix-ups avoids, as seen inside the running container."""
    def run(script: str) -> str:
        return lxcforge(pool.root, "exec", name, "--", "sh", "-c", script).stdout.strip()
    logind_cgroups = run('grep " /sys/fs/cgroup/" /proc/$(systemctl show -p MainPID --value '
                         'systemd-logind)/mountinfo | cut -d" " -f6 | cut -c1-2 | sort -u')
    return {
        "getty generator ran": run("test -e /run/systemd/generator/getty.target.wants && echo yes") == "yes",
        "credential mounts": run("ls /run/credentials 2>/dev/null") != "",
        "cgroups in logind's namespace": logind_cgroups,
        "console getty": run("systemctl is-active console-getty.service"),
    }


def test_boot_makes_no_generator_processes_credential_mounts_or_cgroup_remounts_it_can_skip(
    cached_pool: Store, debian_base: str, session_network: str, containers: list[str], unique: str
) -> None:
    name = f"t{unique}-lean"
    rootfs = new_running(cached_pool, debian_base, session_network, containers, name)
    assert boot_work(cached_pool, name) == {
        "getty generator ran": False, "credential mounts": False,
        "cgroups in logind's namespace": "rw", "console getty": "active"}

    # Without those fix-ups: the generator runs, credential mounts are made, and logind's
    # private namespace has every cgroup mount remounted read-only.
    for generator in ("systemd-getty-generator", "systemd-rc-local-generator"):
        (rootfs / "etc/systemd/system-generators" / generator).unlink()
    for drop_in in (rootfs / "etc/systemd/system").glob("*.d/lxcforge.conf"):
        drop_in.unlink()
    reboot(cached_pool, name)
    assert boot_work(cached_pool, name) == {
        "getty generator ran": True, "credential mounts": True,
        "cgroups in logind's namespace": "ro", "console getty": "active"}
