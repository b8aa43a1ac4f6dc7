#!/usr/bin/env bash
# Start, stop or restart libvirtd the way this host needs it, as root:
#
#   vagrant/libvirtd.sh start|stop|kill|restart|qemu
#
# 'qemu' makes sure the qemu driver answers too (for scripts/vagrant-test's VM): libvirtd loads
# its drivers when it starts, so one started before the driver was installed is restarted.
#
# Where systemd runs the host, that is systemctl (libvirtd.service, or the modular virtlxcd
# and virtnetworkd sockets on Fedora). Elsewhere (containers, CI sandboxes) libvirtd is run
# by hand, in a mount namespace without the hybrid cgroup2 mount that breaks libvirt's LXC
# driver. Running containers survive a stop: libvirtd reconnects to them when it starts.
# 'kill' is SIGKILL, for tests of what a libvirtd crash leaves.
set -euo pipefail
URI=lxc:///
log() { printf '[libvirtd] %s\n' "$*"; }
libvirt_up() { virsh -c "$URI" version >/dev/null 2>&1; }

modular() {
    systemctl list-unit-files virtlxcd.socket >/dev/null 2>&1 &&
        ! systemctl is-enabled --quiet libvirtd.service 2>/dev/null
}

wait_up() {
    for _ in $(seq 100); do libvirt_up && return 0; sleep 0.1; done
    echo "libvirtd did not come up at $URI" >&2
    exit 1
}

start() {
    if [[ -d /run/systemd/system ]]; then
        if modular; then
            for unit in virtlxcd.socket virtnetworkd.socket; do
                systemctl is-active --quiet "$unit" || { log "starting $unit"; systemctl enable --now "$unit"; }
            done
        else
            systemctl is-active --quiet libvirtd.service || { log "starting libvirtd"; systemctl enable --now libvirtd.service; }
        fi
    elif ! libvirt_up; then
        mkdir -p /var/log/libvirt /var/run/libvirt
        # Mounts made later (a loop-file store) must reach libvirtd's private namespace.
        mount --make-rshared /
        local pre=""
        if grep -q ' /sys/fs/cgroup/unified cgroup2 ' /proc/self/mounts &&
            grep -qE '^[^ ]+ [^ ]+ cgroup ' /proc/self/mounts; then
            # Hybrid cgroups: libvirt 9 fails every LXC start with "Unable to create directory
            # /sys/fs/cgroup/unified". Hide that mount from libvirtd only.
            pre="umount /sys/fs/cgroup/unified && "
        fi
        rm -f /var/run/libvirtd.pid
        log "starting libvirtd"
        unshare -m --propagation slave sh -c "${pre}exec libvirtd -d"
    fi
    wait_up
}

stop() {
    local signal=${1:-TERM}
    if [[ -d /run/systemd/system ]]; then
        if modular; then
            systemctl kill --signal="$signal" virtlxcd.service virtnetworkd.service || true
            [[ $signal == KILL ]] || systemctl stop virtlxcd.service virtnetworkd.service
        else
            systemctl kill --signal="$signal" libvirtd.service || true
            [[ $signal == KILL ]] || systemctl stop libvirtd.service
        fi
        return
    fi
    local pids
    pids=$(pgrep -x libvirtd || true)
    [[ -n $pids ]] || return 0
    log "stopping libvirtd ($signal)"
    kill "-$signal" $pids
    for _ in $(seq 100); do pgrep -x libvirtd >/dev/null || return 0; sleep 0.1; done
    echo "libvirtd did not stop" >&2
    exit 1
}

qemu_up() { virsh -c qemu:///system version >/dev/null 2>&1; }

qemu() {
    start
    if [[ -d /run/systemd/system ]]; then
        modular && systemctl enable --now virtqemud.socket
        systemctl start virtlogd.socket
    else
        # qemu's console and log files go through virtlogd; no init system starts it here.
        pgrep -x virtlogd >/dev/null || { log "starting virtlogd"; virtlogd -d; }
    fi
    qemu_up && return 0
    log "restarting libvirtd for its qemu driver"
    stop TERM
    start
    qemu_up || { echo "libvirt's qemu driver does not answer at qemu:///system" >&2; exit 1; }
}

case "${1:-}" in
    start) start ;;
    stop) stop TERM ;;
    kill) stop KILL ;;
    restart) stop TERM; start ;;
    qemu) qemu ;;
    *) echo "usage: $0 start|stop|kill|restart|qemu" >&2; exit 2 ;;
esac
