#!/usr/bin/env bash
# Prepare a Debian 12 or Fedora (39+) host for lxcforge, as root. Idempotent: a second run
# installs nothing, restarts nothing, and finishes in seconds.
#
#   - system packages: libvirt with the LXC driver, dnsmasq, btrfs-progs, dnf/rpm/rpmbuild/
#     createrepo_c, debootstrap, and the headers the Python bindings build against
#   - kernel limits that decide how many containers fit (inotify instances, pids, ARP table)
#   - libvirtd running (started by hand where no init system manages it, without the
#     hybrid cgroup2 mount that breaks libvirt's LXC driver), network 'default' active
#   - a virtualenv in <repo>/.venv with lxcforge and its test extras, linked as
#     /usr/local/bin/lxcforge
#   - the store (/var/lib/lxcforge, or $LXCFORGE_STORE) attached
#   - on systemd hosts, the lxcforge-boot service (containers marked --autostart come back
#     after a reboot; elsewhere run 'lxcforge boot' at boot)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$REPO/.venv"
URI=lxc:///
log() { printf '[provision] %s\n' "$*"; }

if [[ $(id -u) != 0 ]]; then
    echo "provision.sh must run as root (sudo $0)" >&2
    exit 1
fi

# The package lists, shared with build-box.sh (which installs them into the box at build time).
source "$REPO/vagrant/packages.sh"

install_packages() { install_missing DEBIAN_PACKAGES FEDORA_PACKAGES; }

tune_kernel() {
    # Measured: one systemd container holds ~6 inotify instances; 128 stops a host at ~21.
    local conf=/etc/sysctl.d/90-lxcforge.conf
    local want
    want=$(cat <<'SYSCTL'
# lxcforge: limits that decide how many containers fit on this host
fs.inotify.max_user_instances = 8192
fs.inotify.max_user_watches = 1048576
kernel.pid_max = 4194304
kernel.pty.max = 16384
net.ipv4.neigh.default.gc_thresh1 = 2048
net.ipv4.neigh.default.gc_thresh2 = 4096
net.ipv4.neigh.default.gc_thresh3 = 8192
net.core.netdev_max_backlog = 16384
kernel.keys.maxkeys = 200000
kernel.keys.maxbytes = 25000000
SYSCTL
)
    if [[ ! -f $conf || $(cat "$conf") != "$want" ]]; then
        log "writing $conf"
        mkdir -p /etc/sysctl.d
        printf '%s\n' "$want" >"$conf"
    fi
    # Apply only what differs, so a second run changes nothing.
    while IFS='=' read -r key value; do
        [[ $key =~ ^[[:space:]]*# || -z $key ]] && continue
        key=$(echo "$key" | xargs) value=$(echo "$value" | xargs)
        local path="/proc/sys/${key//.//}"
        if [[ -w $path && $(cat "$path") != "$value" ]]; then
            log "sysctl $key=$value"
            echo "$value" >"$path"
        fi
    done <"$conf"
}

start_libvirtd() { bash "$REPO/vagrant/libvirtd.sh" start; }

net_info() { virsh -c "$URI" net-info default 2>/dev/null || true; }

default_network() {
    if [[ -z $(net_info) ]]; then
        log "defining network default"
        virsh -c "$URI" net-define /usr/share/libvirt/networks/default.xml >/dev/null
    fi
    if ! [[ $(net_info) =~ Active:[[:space:]]+yes ]]; then
        log "starting network default"
        virsh -c "$URI" net-start default >/dev/null
    fi
    [[ $(net_info) =~ Autostart:[[:space:]]+yes ]] || virsh -c "$URI" net-autostart default >/dev/null
}

python_env() {
    local stamp="$VENV/.provision-stamp" want
    want=$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1)
    if [[ -f $stamp && $(cat "$stamp") == "$want" && -x $VENV/bin/lxcforge ]]; then
        return
    fi
    log "installing lxcforge into $VENV"
    # The distribution's Python: its headers match what the bindings compile against.
    [[ -x $VENV/bin/python ]] || /usr/bin/python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -e "$REPO[test]"
    echo "$want" >"$stamp"
}

bytecode() {
    # Compiled once here: where PYTHONDONTWRITEBYTECODE is set (CI sandboxes), every command
    # would otherwise compile lxcforge's sources again (~35 ms of each start-up).
    "$VENV/bin/python" -m compileall -q "$REPO/lxcforge" >/dev/null
}

link_command() {
    if [[ $(readlink /usr/local/bin/lxcforge 2>/dev/null) != "$VENV/bin/lxcforge" ]]; then
        log "linking /usr/local/bin/lxcforge"
        ln -sfn "$VENV/bin/lxcforge" /usr/local/bin/lxcforge
    fi
}

boot_service() {
    # After a reboot: attach the store, start the networks and the containers marked
    # --autostart, then gc. Hosts without systemd run 'lxcforge boot' from their own init.
    [[ -d /run/systemd/system ]] || return 0
    local unit=/etc/systemd/system/lxcforge-boot.service want
    want=$(cat <<UNIT
[Unit]
Description=lxcforge: attach the store, start containers marked --autostart, reconcile
After=libvirtd.service virtlxcd.socket virtnetworkd.socket network-online.target
Wants=network-online.target

[Service]
Type=oneshot
RemainAfterExit=yes
Environment=LXCFORGE_STORE=${LXCFORGE_STORE:-/var/lib/lxcforge}
ExecStart=/usr/local/bin/lxcforge boot

[Install]
WantedBy=multi-user.target
UNIT
)
    if [[ ! -f $unit || $(cat "$unit") != "$want" ]]; then
        log "installing $unit"
        printf '%s\n' "$want" >"$unit"
        systemctl daemon-reload
        systemctl enable lxcforge-boot.service >/dev/null 2>&1
    fi
}

install_packages
tune_kernel
start_libvirtd
default_network
python_env
bytecode
link_command
boot_service
# cgroup hierarchies the host lacks, stale container cgroups (sysctls are already set above).
tuned=$("$VENV/bin/lxcforge" host tune)
[[ $tuned == "host already tuned" ]] || log "host tune: $(echo $tuned)"
# Reservations on default through dnsmasq's hosts directory (not libvirt's ~0.3 s live
# update each); it restarts the network, so only while nothing is attached.
if ! "$VENV/bin/lxcforge" network adopt default >/dev/null 2>"$VENV/.adopt-err"; then
    log "network default left as it is: $(head -1 "$VENV/.adopt-err")"
fi
"$VENV/bin/lxcforge" store attach >/dev/null
log "ready: $(virsh -c "$URI" version | sed -n "s/^Using library: //p"); $("$VENV/bin/lxcforge" store status)"
