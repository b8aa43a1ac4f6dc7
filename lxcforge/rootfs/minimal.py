"""A minimal base: the host's static busybox and an init that takes a DHCP lease on eth0
(or uses the address lxcforge wrote for --static-ip) and waits. For scale tests, benchmarks
and appliances that need no package manager."""

from __future__ import annotations

import shutil
from pathlib import Path

from lxcforge.errors import HostNotReady
from lxcforge.rootfs import safepath

BUSYBOX_CANDIDATES = (Path("/bin/busybox"), Path("/usr/bin/busybox"), Path("/usr/sbin/busybox"))
DIRECTORIES = ("bin", "sbin", "dev", "proc", "sys", "run", "tmp", "root", "etc", "var/log",
               "usr/share/udhcpc", "etc/systemd/network")

INIT = r"""#!/bin/busybox sh
# lxcforge minimal init: loopback, then eth0 by DHCP (or the static address in
# /etc/systemd/network/80-lxcforge-eth0.network), then wait; SIGRTMIN+3 or SIGTERM stops.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
ip link set lo up
ip link set eth0 up
conf=/etc/systemd/network/80-lxcforge-eth0.network
address=$(sed -n 's/^Address=//p' "$conf" 2>/dev/null)
if [ -n "$address" ]; then
    ip addr add "$address" dev eth0
    gateway=$(sed -n 's/^Gateway=//p' "$conf")
    [ -n "$gateway" ] && ip route add default via "$gateway"
else
    udhcpc -i eth0 -b -t 30 -T 1 -s /usr/share/udhcpc/default.script >/var/log/udhcpc.log 2>&1
fi
trap 'exit 0' TERM INT 37
while :; do sleep 3600 & wait $!; done
"""

UDHCPC_SCRIPT = r"""#!/bin/busybox sh
case "$1" in
    bound|renew)
        ip addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface"
        [ -n "$router" ] && ip route replace default via "${router%% *}"
        ;;
    deconfig) ip addr flush dev "$interface" ;;
esac
exit 0
"""


def find_busybox() -> Path:
    for candidate in BUSYBOX_CANDIDATES:
        if candidate.is_file():
            return candidate
    raise HostNotReady("no busybox on this host", hint="install busybox-static (Debian) or busybox (Fedora)")


def build(root: Path) -> None:
    busybox = find_busybox()
    for directory in DIRECTORIES:
        safepath.make_dirs(root, "/" + directory)
    shutil.copy2(busybox, root / "bin" / "busybox")
    safepath.symlink(root, "/bin/sh", "busybox")
    safepath.write_text(root, "/sbin/init", INIT, mode=0o755)
    safepath.write_text(root, "/usr/share/udhcpc/default.script", UDHCPC_SCRIPT, mode=0o755)
    safepath.write_text(root, "/etc/os-release", 'NAME="lxcforge minimal"\nID=minimal\nVERSION_ID=1\n')
    safepath.write_text(root, "/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
    safepath.write_text(root, "/etc/group", "root:x:0:\n")
    safepath.write_text(root, "/etc/shadow", "root:*:19000:0:99999:7:::\n", mode=0o600)
