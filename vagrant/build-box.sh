#!/usr/bin/env bash
# Build a vagrant-libvirt box of Debian 12 from Debian's packages alone, as root:
#
#   vagrant/build-box.sh            # prints the path of the .box; rebuilds only when its inputs change
#
# The box is what users run: systemd as PID 1, unified cgroup v2, systemd-networkd, the vagrant
# user with Vagrant's insecure key. Everything provision.sh would install is installed at build
# time, and a wheelhouse of lxcforge's Python dependencies is baked in (pip inside is pointed at
# it), so the VM never needs a network beyond its host. There is no boot loader: Vagrantfile
# boots the kernel and initramfs kept beside the box (libvirt's direct kernel boot).
#
# Output in $LXCFORGE_BOX_CACHE (default /var/cache/lxcforge/box): debian12.box, vmlinuz,
# initrd.img, and debian12.key (the hash of the inputs it was built from, and a build id).
# Needs a Debian 12 host (debootstrap, Debian's vagrant package for the insecure key, and its
# Python 3.11 to build the wheels). Debian's updates are not followed: remove the cache
# directory to rebuild from today's packages.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${LXCFORGE_BOX_CACHE:-/var/cache/lxcforge/box}
MIRROR=${LXCFORGE_BOX_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
log() { printf '[build-box] %s\n' "$*" >&2; }

if [[ $(id -u) != 0 ]]; then
    echo "build-box.sh must run as root (sudo $0)" >&2
    exit 1
fi
source "$REPO/vagrant/packages.sh"

# What makes a system boot and let Vagrant in; the rest is lxcforge's own list.
BOOT_PACKAGES=(
    systemd-sysv udev dbus libpam-systemd kmod linux-image-cloud-amd64 initramfs-tools
    openssh-server sudo rsync ca-certificates less
)

# The box is rebuilt when any of these change: the package lists, this script, the Python
# dependencies (pyproject.toml).
inputs_key() {
    cat "${BASH_SOURCE[0]}" "$REPO/vagrant/packages.sh" "$REPO/pyproject.toml" | sha256sum | cut -c1-16
}

KEY=$(inputs_key)
BOX=$CACHE/debian12.box
up_to_date() {
    [[ -f $BOX && -f $CACHE/vmlinuz && -f $CACHE/initrd.img && -f $CACHE/debian12.key &&
        $(cut -d' ' -f1 "$CACHE/debian12.key") == "$KEY" ]]
}
done_if_up_to_date() {
    up_to_date || return 0
    log "up to date: $BOX"
    echo "$BOX"
    exit 0
}
# What a build mounts in its chroot (also what a killed build may have left mounted).
unmount_chroot() {
    local m
    for m in dev/pts dev proc sys; do
        if mountpoint -q "$1/$m" 2>/dev/null; then umount -l "$1/$m"; fi
    done
}
done_if_up_to_date
for tool in debootstrap qemu-img mkfs.ext4; do
    command -v "$tool" >/dev/null || { echo "build-box.sh needs $tool (a Debian 12 host: apt-get install debootstrap qemu-utils e2fsprogs)" >&2; exit 1; }
done
insecure_key=$(dpkg -L vagrant 2>/dev/null | grep '/keys/vagrant.pub$' | head -1 || true)
if [[ -z $insecure_key ]]; then
    echo "build-box.sh needs Debian's vagrant package (for Vagrant's insecure key): apt-get install vagrant" >&2
    exit 1
fi

mkdir -p "$CACHE"
# One build at a time; a build killed earlier leaves its directory (and maybe its mounts).
exec 9>"$CACHE/.lock"
flock 9
for stale in "$CACHE"/build.*; do
    [[ -d $stale ]] || continue
    unmount_chroot "$stale/root"
    rm -rf "$stale"
done
done_if_up_to_date   # built while we waited
WORK=$(mktemp -d "$CACHE/build.XXXXXX")
ROOT=$WORK/root
cleanup() {
    unmount_chroot "$ROOT"
    rm -rf "$WORK"
}
trap cleanup EXIT

log "debootstrap $SUITE from $MIRROR (a few minutes)"
debootstrap --variant=minbase --include="$(IFS=,; echo "${BOOT_PACKAGES[*]}")" \
    "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
    { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }

mount -t proc proc "$ROOT/proc"
mount -t sysfs sysfs "$ROOT/sys"
mount --bind /dev "$ROOT/dev"
mount --bind /dev/pts "$ROOT/dev/pts"
in_root() {
    chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}

log "installing lxcforge's host packages into the box"
# Package scripts must not start daemons in the build host's namespaces.
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 755 "$ROOT/usr/sbin/policy-rc.d"
in_root apt-get install -y -q --no-install-recommends "${DEBIAN_PACKAGES[@]}" \
    >"$WORK/apt.log" 2>&1 || { tail -20 "$WORK/apt.log" >&2; exit 1; }
in_root apt-get clean
rm -f "$ROOT/usr/sbin/policy-rc.d"

log "configuring: vagrant user, ssh, networkd, unified cgroups, offline pip"
echo lxcforge-box >"$ROOT/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 lxcforge-box\n' >"$ROOT/etc/hosts"
echo '/dev/vda / ext4 defaults,noatime 0 1' >"$ROOT/etc/fstab"
cat >"$ROOT/etc/systemd/network/80-dhcp.network" <<'NET'
[Match]
Name=en* eth*

[Network]
DHCP=yes
NET
in_root systemctl enable systemd-networkd.service ssh.service >/dev/null 2>&1
# Nothing in the VM may reach for the internet: no apt timers.
in_root systemctl mask apt-daily.timer apt-daily-upgrade.timer >/dev/null 2>&1 || true
in_root useradd -m -s /bin/bash vagrant
echo 'vagrant:vagrant' | in_root chpasswd
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' >"$ROOT/etc/sudoers.d/vagrant"
chmod 440 "$ROOT/etc/sudoers.d/vagrant"
install -d -m 700 -o 1000 -g 1000 "$ROOT/home/vagrant/.ssh"
install -m 600 -o 1000 -g 1000 "$insecure_key" "$ROOT/home/vagrant/.ssh/authorized_keys"
echo 'UseDNS no' >"$ROOT/etc/ssh/sshd_config.d/vagrant.conf"
# Host keys are made at build time: every VM from this box is a throwaway test machine.
in_root ssh-keygen -A >/dev/null
# Each VM makes its own machine id at first boot (its DHCP client id derives from it).
: >"$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id"

log "baking a wheelhouse of lxcforge's Python dependencies"
WHEELS=$ROOT/opt/lxcforge-wheels
mkdir -p "$WHEELS"
# The box's Python is the host's (both Debian 12), so wheels built here install there.
/usr/bin/python3 -m venv "$WORK/pip"
"$WORK/pip/bin/pip" install -q --disable-pip-version-check --upgrade pip >"$WORK/wheels.log" 2>&1 ||
    { tail -20 "$WORK/wheels.log" >&2; exit 1; }
"$WORK/pip/bin/pip" wheel -q --disable-pip-version-check -w "$WHEELS" "$REPO[test]" setuptools wheel \
    >"$WORK/wheels.log" 2>&1 || { tail -20 "$WORK/wheels.log" >&2; exit 1; }
rm -f "$WHEELS"/lxcforge-*.whl
printf '[global]\nno-index = true\nfind-links = /opt/lxcforge-wheels\n' >"$ROOT/etc/pip.conf"

log "pre-installing lxcforge's virtualenv where the VM's synced folder puts the project"
# Vagrantfile syncs the project to /vagrant but never its .venv: one made here, with the
# stamp provision.sh checks, spares the VM the install (minutes under emulation).
mkdir -p "$ROOT/vagrant"
cp -r "$REPO/pyproject.toml" "$REPO/README.md" "$REPO/lxcforge" "$ROOT/vagrant/"
in_root sh -c 'python3 -m venv /vagrant/.venv && /vagrant/.venv/bin/pip install -q --disable-pip-version-check -e "/vagrant[test]"' \
    >"$WORK/venv.log" 2>&1 || { tail -20 "$WORK/venv.log" >&2; exit 1; }
sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1 >"$ROOT/vagrant/.venv/.provision-stamp"
chown -R 1000:1000 "$ROOT/vagrant"

log "making the disk image"
kernel=$(ls "$ROOT"/boot/vmlinuz-* | sort -V | tail -1)
initrd=$(ls "$ROOT"/boot/initrd.img-* | sort -V | tail -1)
cp "$kernel" "$WORK/vmlinuz"
cp "$initrd" "$WORK/initrd.img"
unmount_chroot "$ROOT"
truncate -s 20G "$WORK/root.raw"
mkfs.ext4 -q -F -L lxcforge-box -d "$ROOT" "$WORK/root.raw"
qemu-img convert -O qcow2 "$WORK/root.raw" "$WORK/box.img"
rm -f "$WORK/root.raw"
cat >"$WORK/metadata.json" <<'META'
{"provider": "libvirt", "format": "qcow2", "virtual_size": 20}
META
cat >"$WORK/Vagrantfile" <<'VF'
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |lv|
    lv.driver = "kvm"
  end
end
VF
tar -C "$WORK" -cf "$WORK/debian12.box" metadata.json Vagrantfile box.img
mv "$WORK/vmlinuz" "$WORK/initrd.img" "$CACHE/"
chmod 644 "$CACHE/vmlinuz" "$CACHE/initrd.img"
mv "$WORK/debian12.box" "$BOX"
# The inputs' hash, then this build's own id: scripts/vagrant-test re-adds the box when either changes.
echo "$KEY $(date +%s)" >"$CACHE/debian12.key"
log "built $BOX ($(du -h "$BOX" | cut -f1))"
echo "$BOX"
