"""Each fix-up on a temporary tree: what it changes, that the unpatched tree shows the
problem, and that a hostile tree cannot redirect a write outside the rootfs."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from lxcforge.errors import UnsafePath
from lxcforge.rootfs import fixups, safepath


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "usr/lib/systemd/system").mkdir(parents=True)
    for unit in ("systemd-networkd.service", "systemd-networkd.socket"):
        (root / "usr/lib/systemd/system" / unit).write_text("[Unit]\n")
    return root


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    target = tmp_path / "host-file"
    target.write_text("host content\n")
    return target


def test_securetty_adds_console_and_pts0(rootfs: Path) -> None:
    (rootfs / "etc/securetty").write_text("tty1\ntty2")
    lines = (rootfs / "etc/securetty").read_text().splitlines()
    assert "console" not in lines  # the broken state: root refused on the console
    assert fixups.securetty(rootfs) is True
    assert (rootfs / "etc/securetty").read_text().splitlines() == ["tty1", "tty2", "console", "pts/0"]
    assert fixups.securetty(rootfs) is False  # idempotent


def test_securetty_absent_file_is_left_absent(rootfs: Path) -> None:
    assert fixups.securetty(rootfs) is False
    assert not (rootfs / "etc/securetty").exists()


def test_securetty_symlink_out_of_rootfs_is_refused(rootfs: Path, outside: Path) -> None:
    (rootfs / "etc/securetty").symlink_to(outside)
    with pytest.raises(UnsafePath):
        fixups.securetty(rootfs)
    assert outside.read_text() == "host content\n"


def test_shadow_symlink_out_of_rootfs_is_refused(rootfs: Path, outside: Path) -> None:
    (rootfs / "etc/shadow").symlink_to(outside)
    with pytest.raises(UnsafePath):
        fixups.root_password_hash(rootfs, "$6$salt$hash")
    assert outside.read_text() == "host content\n"


def test_symlinked_directory_out_of_rootfs_is_refused(rootfs: Path, tmp_path: Path) -> None:
    host_etc = tmp_path / "host-etc"
    host_etc.mkdir()
    (rootfs / "root").symlink_to(host_etc)
    with pytest.raises(UnsafePath):
        fixups.ssh_authorized_key(rootfs, "ssh-ed25519 AAAAC3Nza test@host")
    assert list(host_etc.iterdir()) == []


def test_root_password_hash_replaces_only_roots_field(rootfs: Path) -> None:
    (rootfs / "etc/shadow").write_text("root:*:16000:0:99999:7:::\nbin:*:16000:0:99999:7:::\n")
    os.chmod(rootfs / "etc/shadow", 0)
    fixups.root_password_hash(rootfs, "$6$abc$def")
    assert (rootfs / "etc/shadow").read_text() == "root:$6$abc$def:16000:0:99999:7:::\nbin:*:16000:0:99999:7:::\n"
    assert stat.S_IMODE((rootfs / "etc/shadow").stat().st_mode) == 0


@pytest.mark.parametrize("bad", ["plaintext", "$6$a:b", "$6$x\nroot::0"])
def test_root_password_rejects_non_hashes(rootfs: Path, bad: str) -> None:
    (rootfs / "etc/shadow").write_text("root:*:1:0:99999:7:::\n")
    with pytest.raises(ValueError):
        fixups.root_password_hash(rootfs, bad)


def test_ssh_key_modes_and_idempotence(rootfs: Path) -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI test@host"
    fixups.ssh_authorized_key(rootfs, key)
    fixups.ssh_authorized_key(rootfs, key)
    assert (rootfs / "root/.ssh/authorized_keys").read_text() == key + "\n"
    assert stat.S_IMODE((rootfs / "root/.ssh").stat().st_mode) == 0o700
    assert stat.S_IMODE((rootfs / "root/.ssh/authorized_keys").stat().st_mode) == 0o600
    with pytest.raises(ValueError):
        fixups.ssh_authorized_key(rootfs, "-----BEGIN OPENSSH PRIVATE KEY-----")


def test_machine_id_emptied(rootfs: Path) -> None:
    (rootfs / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (rootfs / "var/lib/dbus").mkdir(parents=True)
    (rootfs / "var/lib/dbus/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    fixups.empty_machine_id(rootfs)
    assert (rootfs / "etc/machine-id").read_text() == ""
    assert os.readlink(rootfs / "var/lib/dbus/machine-id") == "/etc/machine-id"


def test_selinux_disabled(rootfs: Path) -> None:
    (rootfs / "etc/selinux").mkdir()
    (rootfs / "etc/selinux/config").write_text("SELINUX=enforcing\nSELINUXTYPE=targeted\n")
    assert fixups.disable_selinux(rootfs)
    assert (rootfs / "etc/selinux/config").read_text() == "SELINUX=disabled\nSELINUXTYPE=targeted\n"


def test_fstab_emptied(rootfs: Path) -> None:
    (rootfs / "etc/fstab").write_text("/dev/sda1 / ext4 defaults 1 1\n")
    fixups.empty_fstab(rootfs)
    assert all(line.startswith("#") for line in (rootfs / "etc/fstab").read_text().splitlines())


def test_dhcp_ifcfg(rootfs: Path) -> None:
    fixups.dhcp_on_eth0(rootfs, fixups.NetworkStack.IFCFG)
    text = (rootfs / "etc/sysconfig/network-scripts/ifcfg-eth0").read_text()
    assert "BOOTPROTO=dhcp" in text and "ONBOOT=yes" in text


def test_dhcp_networkd_enables_units(rootfs: Path) -> None:
    fixups.dhcp_on_eth0(rootfs, fixups.NetworkStack.NETWORKD)
    assert "DHCP=ipv4" in (rootfs / "etc/systemd/network/80-lxcforge-eth0.network").read_text()
    link = rootfs / "etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
    assert os.readlink(link) == "/usr/lib/systemd/system/systemd-networkd.service"


def test_mask_units_points_at_dev_null_and_replaces_files(rootfs: Path) -> None:
    (rootfs / "etc/systemd/system").mkdir(parents=True)
    (rootfs / "etc/systemd/system/systemd-udevd.service").write_text("[Service]\n")
    fixups.mask_units(rootfs)
    for unit in fixups.MASKED_UNITS:
        assert os.readlink(rootfs / "etc/systemd/system" / unit) == "/dev/null"


def test_mask_units_never_follows_a_symlinked_directory(rootfs: Path, tmp_path: Path) -> None:
    host_dir = tmp_path / "host-systemd"
    host_dir.mkdir()
    (rootfs / "etc/systemd").mkdir()
    (rootfs / "etc/systemd/system").symlink_to(host_dir)
    with pytest.raises(UnsafePath):
        fixups.mask_units(rootfs)
    assert list(host_dir.iterdir()) == []


def test_hostname_and_hosts(rootfs: Path) -> None:
    fixups.hostname(rootfs, "web1")
    fixups.hosts(rootfs, "web1")
    assert (rootfs / "etc/hostname").read_text() == "web1\n"
    assert "127.0.1.1   web1" in (rootfs / "etc/hosts").read_text()


def test_safepath_rejects_dotdot(rootfs: Path) -> None:
    with pytest.raises(UnsafePath):
        safepath.write_text(rootfs, "/etc/../../escape", "x")
    assert not (rootfs.parent / "escape").exists()


def test_safepath_write_keeps_mode_and_is_atomic(rootfs: Path) -> None:
    (rootfs / "etc/passwd").write_text("old\n")
    os.chmod(rootfs / "etc/passwd", 0o640)
    safepath.write_text(rootfs, "/etc/passwd", "new\n")
    assert (rootfs / "etc/passwd").read_text() == "new\n"
    assert stat.S_IMODE((rootfs / "etc/passwd").stat().st_mode) == 0o640
    assert sorted(p.name for p in (rootfs / "etc").iterdir()) == ["passwd"]


def test_volatile_journal(rootfs: Path) -> None:
    assert not (rootfs / "etc/systemd/journald.conf.d").exists()
    fixups.volatile_journal(rootfs)
    assert "Storage=volatile" in (rootfs / "etc/systemd/journald.conf.d/50-lxcforge.conf").read_text()
    assert os.readlink(rootfs / "etc/systemd/system/systemd-journal-flush.service") == "/dev/null"


def needs_update(root: Path, directory: str) -> bool:
    """systemd's ConditionNeedsUpdate=/etc or /var (condition_test_needs_update, v252)."""
    stamp, usr = root / directory.lstrip("/") / ".updated", (root / "usr").stat()
    if not stamp.exists():
        return True
    other = stamp.stat()
    if usr.st_mtime_ns // 10**9 != other.st_mtime_ns // 10**9:
        return usr.st_mtime_ns // 10**9 > other.st_mtime_ns // 10**9
    if other.st_mtime_ns % 10**9:
        return usr.st_mtime_ns % 10**9 > other.st_mtime_ns % 10**9
    recorded = dict(line.split("=", 1) for line in stamp.read_text().splitlines() if "=" in line)
    return usr.st_mtime_ns % 10**9 > int(recorded["TIMESTAMP_NSEC"]) % 10**9


def test_update_stamps_skip_update_units_until_usr_changes(rootfs: Path) -> None:
    (rootfs / "var").mkdir()
    assert needs_update(rootfs, "/etc") and needs_update(rootfs, "/var")
    fixups.update_done_stamps(rootfs)
    assert not needs_update(rootfs, "/etc") and not needs_update(rootfs, "/var")
    later = (rootfs / "usr").stat().st_mtime_ns + 2 * 10**9
    os.utime(rootfs / "usr", ns=(later, later))  # a package installed inside the container
    assert needs_update(rootfs, "/etc")


def test_update_stamp_symlink_out_of_rootfs_is_refused(rootfs: Path, outside: Path) -> None:
    (rootfs / "etc/.updated").symlink_to(outside)
    before = outside.stat().st_mtime_ns
    with pytest.raises(UnsafePath):
        fixups.update_done_stamps(rootfs)
    assert outside.read_text() == "host content\n" and outside.stat().st_mtime_ns == before


def test_init_wrapper_needs_a_shell(rootfs: Path) -> None:
    assert not fixups.has_shell(rootfs)
    (rootfs / "usr/bin").mkdir(parents=True)
    (rootfs / "usr/bin/sh").symlink_to("dash")
    assert fixups.has_shell(rootfs)
    fixups.install_init_wrapper(rootfs, "/usr/sbin/lxcforge-init", "#!/bin/sh\nexec /sbin/init\n")
    assert os.access(rootfs / "usr/sbin/lxcforge-init", os.X_OK)


def test_static_address_for_networkd_and_ifcfg(rootfs: Path) -> None:
    fixups.static_address_on_eth0(rootfs, "10.1.2.3", 24, "10.1.2.1")
    text = (rootfs / "etc/systemd/network/80-lxcforge-eth0.network").read_text()
    assert "Address=10.1.2.3/24" in text and "Gateway=10.1.2.1" in text and "DHCP" not in text
    fixups.dhcp_on_eth0(rootfs, fixups.NetworkStack.IFCFG)
    fixups.static_address_on_eth0(rootfs, "10.1.2.3", 24, "10.1.2.1")
    ifcfg = (rootfs / "etc/sysconfig/network-scripts/ifcfg-eth0").read_text()
    assert "BOOTPROTO=none" in ifcfg and "IPADDR=10.1.2.3" in ifcfg and "PREFIX=24" in ifcfg


def test_mask_generators(rootfs: Path) -> None:
    fixups.mask_generators(rootfs)
    masked = rootfs / "etc/systemd/system-generators"
    assert sorted(p.name for p in masked.iterdir()) == sorted(fixups.MASKED_GENERATORS)
    assert all(os.readlink(p) == "/dev/null" for p in masked.iterdir())
    assert "systemd-getty-generator" not in fixups.MASKED_GENERATORS  # the console getty needs it


def test_static_generator_output(rootfs: Path) -> None:
    units = rootfs / "usr/lib/systemd/system"
    (units / "console-getty.service").write_text("[Unit]\nDescription=Console Getty\n")
    (units / "rc-local.service").write_text("[Unit]\nConditionFileIsExecutable=/etc/rc.local\n")
    generators = rootfs / "etc/systemd/system-generators"
    assert not generators.exists()  # before: both generators run at every boot
    fixups.static_generator_output(rootfs)
    wants = rootfs / "etc/systemd/system"
    assert os.readlink(wants / "getty.target.wants/console-getty.service") == \
        "/usr/lib/systemd/system/console-getty.service"
    assert os.readlink(wants / "multi-user.target.wants/rc-local.service") == \
        "/usr/lib/systemd/system/rc-local.service"
    assert sorted(os.listdir(generators)) == ["systemd-getty-generator", "systemd-rc-local-generator"]
    assert {os.readlink(generators / g) for g in os.listdir(generators)} == {"/dev/null"}


def test_rc_local_generator_kept_when_the_unit_does_not_check_for_itself(rootfs: Path) -> None:
    (rootfs / "usr/lib/systemd/system/rc-local.service").write_text("[Service]\nExecStart=/etc/rc.local\n")
    fixups.static_generator_output(rootfs)  # no console-getty either: nothing to make static
    assert not (rootfs / "etc/systemd/system-generators").exists()
    assert not (rootfs / "etc/systemd/system/multi-user.target.wants").exists()


def test_writable_cgroups_for_daemons(rootfs: Path) -> None:
    units = rootfs / "usr/lib/systemd/system"
    (units / "systemd-networkd.service").write_text("[Service]\nProtectControlGroups=yes\n")
    (units / "systemd-logind.service").write_text("[Service]\nExecStart=x\n")  # an older systemd
    fixups.writable_cgroups_for_daemons(rootfs)
    drop_in = rootfs / "etc/systemd/system/systemd-networkd.service.d/lxcforge.conf"
    assert drop_in.read_text() == "[Service]\nProtectControlGroups=no\n"
    assert not (rootfs / "etc/systemd/system/systemd-logind.service.d").exists()


def test_no_credential_mounts(rootfs: Path) -> None:
    units = rootfs / "usr/lib/systemd/system"
    (units / "systemd-tmpfiles-setup.service").write_text("[Service]\nLoadCredential=tmpfiles.extra\n")
    (units / "alias.service").symlink_to("systemd-tmpfiles-setup.service")
    fixups.no_credential_mounts(rootfs)
    made = sorted(p.parent.name for p in (rootfs / "etc/systemd/system").glob("*.d/lxcforge.conf"))
    assert made == ["systemd-tmpfiles-setup.service.d"]
    assert (rootfs / "etc/systemd/system/systemd-tmpfiles-setup.service.d/lxcforge.conf").read_text() == \
        "[Service]\nLoadCredential=\n"


def test_regular_files_never_follows_a_symlinked_directory(rootfs: Path, tmp_path: Path) -> None:
    host_dir = tmp_path / "host-units"
    host_dir.mkdir()
    (host_dir / "secret.service").write_text("[Service]\nLoadCredential=x\n")
    (rootfs / "lib").symlink_to(host_dir)
    assert safepath.regular_files(rootfs, "/lib") == []
    assert safepath.regular_files(rootfs, "/usr/lib/systemd/system") == [
        "systemd-networkd.service", "systemd-networkd.socket"]


def test_a_base_does_not_keep_the_build_hosts_resolver(rootfs: Path) -> None:
    (rootfs / "etc/resolv.conf").write_text("nameserver 10.9.8.7\nsearch build-host.example\n")
    assert fixups.no_build_host_resolver(rootfs) is True
    assert "nameserver" not in (rootfs / "etc/resolv.conf").read_text()
    (rootfs / "etc/resolv.conf").unlink()
    (rootfs / "etc/resolv.conf").symlink_to("../run/systemd/resolve/stub-resolv.conf")
    assert fixups.no_build_host_resolver(rootfs) is False  # systemd-resolved's: left as it is
    assert os.readlink(rootfs / "etc/resolv.conf") == "../run/systemd/resolve/stub-resolv.conf"


def test_each_container_resolves_through_its_networks_gateway(rootfs: Path, outside: Path) -> None:
    assert fixups.resolver(rootfs, "10.40.0.1") is True
    assert (rootfs / "etc/resolv.conf").read_text() == "nameserver 10.40.0.1\n"
    (rootfs / "etc/resolv.conf").unlink()
    (rootfs / "etc/resolv.conf").symlink_to(outside)  # hostile, or systemd-resolved's: never followed
    assert fixups.resolver(rootfs, "10.40.0.1") is False
    assert outside.read_text() == "host content\n"
