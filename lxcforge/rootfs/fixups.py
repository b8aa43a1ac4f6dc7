"""Fix-ups that make a rootfs boot as a libvirt LXC container and let root log in.

Each is a small function on a rootfs directory; all file access goes through safepath, so a
hostile rootfs cannot redirect a write to the host."""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from pathlib import Path

from lxcforge.rootfs import safepath

log = logging.getLogger(__name__)

# libvirt 9 shows the console to PAM as "console"; older libvirt showed "pts/0".
SECURETTY_CONSOLES = ("console", "pts/0")

# Units that cannot work in a container: no udev (devices come from libvirt), no kernel
# modules, no hugepages/fuse/debugfs/binfmt mounts of its own.
MASKED_UNITS = (
    "systemd-udevd.service",
    "systemd-udevd-control.socket",
    "systemd-udevd-kernel.socket",
    "systemd-udev-trigger.service",
    "systemd-udev-settle.service",
    "systemd-modules-load.service",
    "dev-hugepages.mount",
    "sys-fs-fuse-connections.mount",
    "sys-kernel-config.mount",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "proc-sys-fs-binfmt_misc.automount",
    # Hundreds of clones must not each poll the distribution's mirrors twice a day.
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dnf-makecache.timer",
    # ext4 maintenance of the host's disks is not a container's business.
    "e2scrub_reap.service",
    "e2scrub_all.timer",
    # Remounts / and /usr with the options in fstab, which has no entries here (empty_fstab):
    # libvirt mounts the root. One process less at every boot of every container.
    "systemd-remount-fs.service",
)


# Generators that can find nothing in a container (no disks, no kernel command line of its
# own) but cost a fork and exec each at every boot of every container.
MASKED_GENERATORS = (
    "systemd-cryptsetup-generator",
    "systemd-gpt-auto-generator",
    "systemd-hibernate-resume-generator",
    "systemd-integritysetup-generator",
    "systemd-veritysetup-generator",
    "systemd-system-update-generator",
    "systemd-debug-generator",
    "systemd-run-generator",  # acts on systemd.run= on the kernel command line
)


# Units whose private mount namespace remounts each of the container's cgroup mounts (14 on a
# cgroup v1 host) read-only at every boot. A hundred containers booting at once make those
# remounts, and the mountinfo re-reads between them, queue on the kernel's one mount
# namespace lock. Root in a privileged container can write the cgroup tree anyway.
CGROUP_WRITABLE_UNITS = ("systemd-logind.service", "systemd-networkd.service")

UNIT_DIRECTORIES = ("/usr/lib/systemd/system", "/lib/systemd/system")


class NetworkStack(enum.StrEnum):
    IFCFG = "ifcfg"  # initscripts' network service (old Fedora)
    NETWORKD = "networkd"  # systemd-networkd


def securetty(root: Path) -> bool:
    """Make sure /etc/securetty (where the rootfs has one) lists the console root logs in on.
    Returns True if the file was changed."""
    if not safepath.exists(root, "/etc/securetty") and not safepath.is_symlink(root, "/etc/securetty"):
        return False
    text = safepath.read_text(root, "/etc/securetty")
    present = {line.strip() for line in text.splitlines()}
    missing = [tty for tty in SECURETTY_CONSOLES if tty not in present]
    if not missing:
        return False
    if text and not text.endswith("\n"):
        text += "\n"
    safepath.write_text(root, "/etc/securetty", text + "".join(f"{tty}\n" for tty in missing))
    return True


def root_password_hash(root: Path, password_hash: str) -> None:
    """Set root's password in /etc/shadow to an already computed crypt hash."""
    if not password_hash.startswith("$") or ":" in password_hash or "\n" in password_hash:
        raise ValueError("expected a crypt(3) hash such as $6$salt$...")
    shadow = safepath.read_text(root, "/etc/shadow")
    lines = shadow.splitlines()
    for i, line in enumerate(lines):
        fields = line.split(":")
        if fields[0] == "root" and len(fields) >= 2:
            fields[1] = password_hash
            lines[i] = ":".join(fields)
            break
    else:
        lines.insert(0, f"root:{password_hash}:19000:0:99999:7:::")
    safepath.write_text(root, "/etc/shadow", "\n".join(lines) + "\n", mode=0o000)


def check_public_key(key: str) -> None:
    """ValueError unless key is one line of an SSH public key (not a private key file)."""
    if not key or "\n" in key or not key.split()[0].startswith(("ssh-", "ecdsa-", "sk-")):
        raise ValueError("not an SSH public key (expected one line like 'ssh-ed25519 AAAA... comment')")


def ssh_authorized_key(root: Path, public_key: str) -> None:
    """Add a public key to /root/.ssh/authorized_keys (0700 directory, 0600 file)."""
    key = public_key.strip()
    check_public_key(key)
    safepath.make_dirs(root, "/root/.ssh", mode=0o700)
    safepath.chmod(root, "/root/.ssh", 0o700)
    existing = ""
    if safepath.exists(root, "/root/.ssh/authorized_keys") or safepath.is_symlink(root, "/root/.ssh/authorized_keys"):
        existing = safepath.read_text(root, "/root/.ssh/authorized_keys")
    if key in existing.splitlines():
        return
    if existing and not existing.endswith("\n"):
        existing += "\n"
    safepath.write_text(root, "/root/.ssh/authorized_keys", existing + key + "\n", mode=0o600)
    safepath.chmod(root, "/root/.ssh/authorized_keys", 0o600)


# Every path a container's fix-ups may write (or create on the way), for an unprivileged
# container's root to own them.
WRITTEN_FOR_A_CONTAINER = (
    "/etc/hostname", "/etc/hosts", "/etc/machine-id", "/var/lib/dbus/machine-id", "/etc/resolv.conf",
    "/root/.ssh", "/root/.ssh/authorized_keys", "/usr/sbin/lxcforge-init",
    "/etc/systemd/network/80-lxcforge-eth0.network", "/etc/sysconfig/network-scripts/ifcfg-eth0",
)


def give_to_range(root: Path, paths: Sequence[str], offset: int) -> None:
    """Hand files the fix-ups wrote as the host's root to the root of the id range at offset
    (only the files themselves; whatever the base had is shifted already)."""
    for path in paths:
        if safepath.exists(root, path) or safepath.is_symlink(root, path):
            safepath.lchown(root, path, offset, offset)


def empty_machine_id(root: Path) -> None:
    """An empty /etc/machine-id: systemd fills it at boot from libvirt's container UUID.
    A shared id would give every clone the same DHCP client id and so the same address."""
    safepath.write_text(root, "/etc/machine-id", "", mode=0o444)
    if safepath.exists(root, "/var/lib/dbus/machine-id"):
        safepath.remove(root, "/var/lib/dbus/machine-id")
        safepath.symlink(root, "/var/lib/dbus/machine-id", "/etc/machine-id")


def disable_selinux(root: Path) -> bool:
    """SELinux cannot be enforced inside a container; stop the guest from trying."""
    if not safepath.exists(root, "/etc/selinux/config"):
        return False
    lines = safepath.read_text(root, "/etc/selinux/config").splitlines()
    changed = [("SELINUX=disabled" if line.startswith("SELINUX=") else line) for line in lines]
    if not any(line.startswith("SELINUX=") for line in changed):
        changed.append("SELINUX=disabled")
    safepath.write_text(root, "/etc/selinux/config", "\n".join(changed) + "\n")
    return True


def volatile_journal(root: Path) -> None:
    """Keep the journal in memory: a persistent one costs each clone 8 MiB of its own disk and
    the writes at boot; hundreds of containers do not need their logs to survive a stop.
    Flushing to /var/log/journal then has nothing to do, so its unit (a journalctl run at every
    boot) is masked."""
    safepath.write_text(root, "/etc/systemd/journald.conf.d/50-lxcforge.conf",
                        "[Journal]\nStorage=volatile\nRuntimeMaxUse=8M\n")
    mask_units(root, ("systemd-journal-flush.service",))


UPDATE_STAMPS = ("/etc/.updated", "/var/.updated")


def update_done_stamps(root: Path) -> None:
    """Write what systemd-update-done writes after the first boot that follows an update of
    /usr. Without them every container's boot runs the units guarded by ConditionNeedsUpdate=
    (systemd-sysusers, and where present ldconfig, hwdb and catalog updates), to find nothing
    to do; with them those run again only once /usr changes (a package installed inside).
    Written last: the stamps carry /usr's modification time."""
    if not safepath.exists(root, "/usr"):
        return
    usr = safepath.mtime_ns(root, "/usr")
    for stamp in UPDATE_STAMPS:
        safepath.write_text(root, stamp, "# lxcforge: the time /usr was last updated, as systemd-update-done "
                            f"records it (see systemd-update-done.service(8))\nTIMESTAMP_NSEC={usr}\n")
        safepath.set_mtime_ns(root, stamp, usr)


def empty_fstab(root: Path) -> None:
    """libvirt mounts the root; an fstab entry for a disk that is not there fails the boot."""
    safepath.write_text(root, "/etc/fstab", "# lxcforge: the root filesystem is mounted by libvirt\n")


def dhcp_on_eth0(root: Path, stack: NetworkStack) -> None:
    if stack is NetworkStack.IFCFG:
        safepath.write_text(root, "/etc/sysconfig/network", "NETWORKING=yes\n")
        safepath.write_text(
            root, "/etc/sysconfig/network-scripts/ifcfg-eth0",
            "DEVICE=eth0\nBOOTPROTO=dhcp\nONBOOT=yes\nTYPE=Ethernet\nNM_CONTROLLED=no\n",
        )
        return
    # UseHostname=no: lxcforge writes /etc/hostname (the same name the reservation carries);
    # taking it from DHCP again would start systemd-hostnamed in every container at boot.
    safepath.write_text(
        root, "/etc/systemd/network/80-lxcforge-eth0.network",
        "[Match]\nName=eth0\n\n[Network]\nDHCP=ipv4\n\n[DHCPv4]\nUseHostname=no\n",
    )
    enable_unit(root, "systemd-networkd.service", "multi-user.target")
    enable_unit(root, "systemd-networkd.socket", "sockets.target")


def static_address_on_eth0(root: Path, address: str, prefix: int, gateway: str) -> None:
    """The reserved address written into the guest, so it needs no DHCP round trip."""
    if safepath.exists(root, "/etc/sysconfig/network-scripts/ifcfg-eth0"):
        safepath.write_text(
            root, "/etc/sysconfig/network-scripts/ifcfg-eth0",
            f"DEVICE=eth0\nBOOTPROTO=none\nONBOOT=yes\nTYPE=Ethernet\nNM_CONTROLLED=no\n"
            f"IPADDR={address}\nPREFIX={prefix}\nGATEWAY={gateway}\nDNS1={gateway}\n",
        )
        return
    safepath.write_text(
        root, "/etc/systemd/network/80-lxcforge-eth0.network",
        f"[Match]\nName=eth0\n\n[Network]\nAddress={address}/{prefix}\nGateway={gateway}\nDNS={gateway}\n",
    )


def enable_unit(root: Path, unit: str, wanted_by: str) -> None:
    unit_file = _unit_path(root, unit)
    if unit_file is None:
        log.debug("unit %s not in the rootfs; not enabled", unit)
        return
    safepath.symlink(root, f"/etc/systemd/system/{wanted_by}.wants/{unit}", unit_file)


def _unit_path(root: Path, unit: str) -> str | None:
    for directory in UNIT_DIRECTORIES:
        if safepath.exists(root, f"{directory}/{unit}"):
            return f"{directory}/{unit}"
    return None


def mask_units(root: Path, units: tuple[str, ...] = MASKED_UNITS) -> None:
    for unit in units:
        safepath.symlink(root, f"/etc/systemd/system/{unit}", "/dev/null")


def has_shell(root: Path) -> bool:
    """True if the rootfs has /bin/sh (usually a symlink to dash or bash; resolved at run time
    inside the container, never here)."""
    return any(safepath.exists(root, p) or safepath.is_symlink(root, p) for p in ("/usr/bin/sh", "/bin/sh"))


def install_init_wrapper(root: Path, path: str, script: str) -> None:
    """A script run as the container's init before the real one (see lxcforge.cgroups)."""
    safepath.write_text(root, path, script, mode=0o755)
    safepath.chmod(root, path, 0o755)


def mask_generators(root: Path, generators: tuple[str, ...] = MASKED_GENERATORS) -> None:
    """A generator masked by a /dev/null link of its name in /etc/systemd/system-generators."""
    for generator in generators:
        safepath.symlink(root, f"/etc/systemd/system-generators/{generator}", "/dev/null")


RESOLV_CONF = "/etc/resolv.conf"
NO_RESOLVER = "# lxcforge writes each container's resolver here: its network's gateway (libvirt's dnsmasq)\n"


def no_build_host_resolver(root: Path) -> bool:
    """A base must not carry the resolver of the host that built it (debootstrap copies the
    host's /etc/resolv.conf): each container gets its own network's (resolver()). A symlink
    (systemd-resolved's stub) is the distribution's own arrangement and stays."""
    if safepath.is_symlink(root, RESOLV_CONF) or not safepath.exists(root, RESOLV_CONF):
        return False
    safepath.write_text(root, RESOLV_CONF, NO_RESOLVER)
    return True


def resolver(root: Path, nameserver: str) -> bool:
    """The container resolves through its network's DNS: libvirt's dnsmasq on the gateway
    answers for the internet (NAT networks) and, by name, for every container that holds a
    reservation there. Left alone where /etc/resolv.conf is a symlink (systemd-resolved,
    which takes the DNS server from DHCP itself)."""
    if safepath.is_symlink(root, RESOLV_CONF):
        return False
    safepath.write_text(root, RESOLV_CONF, f"nameserver {nameserver}\n")
    return True


def hostname(root: Path, name: str) -> None:
    safepath.write_text(root, "/etc/hostname", name + "\n")


def hosts(root: Path, name: str) -> None:
    """/etc/hosts resolving the container's own name locally."""
    safepath.write_text(
        root, "/etc/hosts",
        "127.0.0.1   localhost localhost.localdomain\n"
        "::1         localhost localhost.localdomain ip6-localhost ip6-loopback\n"
        f"127.0.1.1   {name}\n",
    )


def _drop_in(root: Path, unit: str, text: str) -> None:
    safepath.write_text(root, f"/etc/systemd/system/{unit}.d/lxcforge.conf", text)


def _unit_says(root: Path, unit: str, setting: str) -> bool:
    """True if the rootfs has unit and one of its lines starts with setting ("Key=...")."""
    path = _unit_path(root, unit)
    return path is not None and f"\n{setting}" in safepath.read_text(root, path)


def static_generator_output(root: Path) -> None:
    """Two generators whose whole output in a libvirt container is known when the base is
    built, made static links instead of a process at every boot: the getty generator adds
    console-getty.service (libvirt sets no $container_ttys), and the rc-local generator adds
    rc-local.service when /etc/rc.local is executable, which the unit's own
    ConditionFileIsExecutable= still checks at boot."""
    if _unit_path(root, "console-getty.service") is not None:
        enable_unit(root, "console-getty.service", "getty.target")
        mask_generators(root, ("systemd-getty-generator",))
    if _unit_says(root, "rc-local.service", "ConditionFileIsExecutable="):
        enable_unit(root, "rc-local.service", "multi-user.target")
        mask_generators(root, ("systemd-rc-local-generator",))


def writable_cgroups_for_daemons(root: Path) -> None:
    """ProtectControlGroups=no for logind and networkd (see CGROUP_WRITABLE_UNITS), where
    their units ask for it (older systemd has no such setting)."""
    for unit in CGROUP_WRITABLE_UNITS:
        if _unit_says(root, unit, "ProtectControlGroups=yes"):
            _drop_in(root, unit, "[Service]\nProtectControlGroups=no\n")


def no_credential_mounts(root: Path) -> None:
    """libvirt passes a container no systemd credentials, yet systemd makes a credentials
    mount (in a helper's mount namespace) for every unit with LoadCredential= at every boot;
    an empty LoadCredential= in a drop-in resets the list."""
    services = {unit for directory in UNIT_DIRECTORIES for unit in safepath.regular_files(root, directory)
                if unit.endswith(".service")}
    for unit in sorted(services):
        if _unit_says(root, unit, "LoadCredential="):
            _drop_in(root, unit, "[Service]\nLoadCredential=\n")
