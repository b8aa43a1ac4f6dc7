"""A local RPM repository shaped like Fedora's, built with rpmbuild + createrepo_c, so the
Fedora path of `lxcforge base` can be tested with no Fedora mirror in reach.

It carries what the fix-ups act on and what a boot needs:
  setup           /etc/passwd, /etc/shadow, /etc/securetty WITHOUT console or pts/0,
                  /etc/pam.d/login with pam_securetty, SELinux enforcing, an fstab with a
                  disk that a container does not have, a fixed /etc/machine-id
  fedora-release  /etc/os-release, /etc/fedora-release
  systemd         a small init (static busybox): brings up eth0 with DHCP when
                  ifcfg-eth0 or a systemd-networkd file asks for it, then waits
  stubs           the rest of the package set, empty, so the real names resolve
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import textwrap
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
CACHE = Path("/var/cache/lxcforge-tests")

STUBS = ("passwd", "yum", "dnf", "vim-minimal", "openssh-server", "procps-ng", "iproute", "dhclient",
         "initscripts", "rootfiles", "fedora-repos", "systemd-networkd")

INIT = r"""#!/usr/bin/busybox sh
# A stand-in for systemd: DHCP on eth0 when the rootfs's network configuration asks for it.
export PATH=/usr/bin:/bin
/usr/bin/busybox mkdir -p /bin /run /tmp /root
/usr/bin/busybox --install -s /bin
ip link set lo up
dhcp=no
grep -qs '^BOOTPROTO=dhcp' /etc/sysconfig/network-scripts/ifcfg-eth0 && dhcp=yes
grep -qs '^DHCP=' /etc/systemd/network/*.network && dhcp=yes
echo "init: dhcp=$dhcp" > /run/init.log
if [ $dhcp = yes ]; then
    udhcpc -i eth0 -t 20 -T 1 -b -s /usr/share/udhcpc/default.script >> /run/init.log 2>&1
fi
trap 'exit 0' TERM INT
while :; do sleep 1; done
"""

UDHCPC_SCRIPT = r"""#!/usr/bin/busybox sh
case "$1" in
    bound|renew)
        ip addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface"
        ip link set "$interface" up
        [ -n "$router" ] && ip route replace default via "${router%% *}"
        ;;
    deconfig) ip link set "$interface" up; ip addr flush dev "$interface" ;;
esac
exit 0
"""

SETUP_FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
    "etc/shadow": "root:*:16000:0:99999:7:::\n",
    "etc/group": "root:x:0:\n",
    "etc/securetty": "tty1\ntty2\ntty3\ntty4\ntty5\ntty6\n",
    "etc/pam.d/login": "auth required pam_securetty.so\nauth include system-auth\n",
    "etc/selinux/config": "SELINUX=enforcing\nSELINUXTYPE=targeted\n",
    "etc/fstab": "/dev/sda1 / ext4 defaults 1 1\n",
    "etc/machine-id": "0123456789abcdef0123456789abcdef\n",
}


def _spec(name: str, release: int, files: dict[str, tuple[str, int]], requires: tuple[str, ...] = ()) -> str:
    install = []
    listing = []
    for path, (source, mode) in files.items():
        install.append(f"install -D -m {mode:o} {source} %{{buildroot}}/{path}")
        listing.append(f"%attr({mode:o},root,root) /{path}")
    req = "".join(f"Requires: {r}\n" for r in requires)
    return textwrap.dedent(f"""\
        Name: {name}
        Version: {release}
        Release: 1.fc{release}
        Summary: Fedora-shaped test package {name}
        License: MIT
        BuildArch: noarch
        """) + req + textwrap.dedent("""\
        %define debug_package %{nil}
        %define __os_install_post %{nil}
        %define _binaries_in_noarch_packages_terminate_build 0
        %description
        Test package.
        %install
        """) + "\n".join(install) + "\n%files\n" + "\n".join(listing) + "\n"


def _inputs_digest(release: int) -> str:
    parts = [str(release), INIT, UDHCPC_SCRIPT, repr(sorted(SETUP_FILES.items())), repr(STUBS),
             hashlib.sha256(BUSYBOX.read_bytes()).hexdigest(), _spec("x", release, {})]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def build_repo(release: int, cache: Path = CACHE) -> Path:
    """Build (or reuse from the cache) the repository for release; returns its directory."""
    repo = cache / f"fedora-shaped-{release}-{_inputs_digest(release)}"
    if (repo / "repodata" / "repomd.xml").exists():
        return repo
    work = cache / f".build-{release}-{_inputs_digest(release)}"
    shutil.rmtree(work, ignore_errors=True)
    sources = work / "sources"
    sources.mkdir(parents=True)
    (sources / "init").write_text(INIT)
    (sources / "udhcpc.script").write_text(UDHCPC_SCRIPT)
    shutil.copy2(BUSYBOX, sources / "busybox")
    for path, content in SETUP_FILES.items():
        target = sources / "setup" / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    release_text = (f'NAME=Fedora\nVERSION="{release} (Test)"\nID=fedora\nVERSION_ID={release}\n'
                    f'PRETTY_NAME="Fedora {release} (Test)"\n')
    (sources / "os-release").write_text(release_text)
    (sources / "fedora-release").write_text(f"Fedora release {release} (Test)\n")

    specs = {
        "setup": _spec("setup", release, {p: (str(sources / "setup" / p), 0o600 if "shadow" in p else 0o644)
                                          for p in SETUP_FILES}),
        "fedora-release": _spec("fedora-release", release, {
            "etc/os-release": (str(sources / "os-release"), 0o644),
            "etc/fedora-release": (str(sources / "fedora-release"), 0o644)}),
        "systemd": _spec("systemd", release, {
            "usr/bin/busybox": (str(sources / "busybox"), 0o755),
            "sbin/init": (str(sources / "init"), 0o755),
            "usr/share/udhcpc/default.script": (str(sources / "udhcpc.script"), 0o755)},
            requires=("setup",)),
    }
    for stub in STUBS:
        specs[stub] = _spec(stub, release, {})
    out = work / "repo"
    for name, spec in specs.items():
        spec_path = work / f"{name}.spec"
        spec_path.write_text(spec)
        subprocess.run(["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {work / 'top'}",
                        "--define", f"_rpmdir {out}", str(spec_path)], check=True, capture_output=True)
    subprocess.run(["createrepo_c", "--quiet", str(out)], check=True, capture_output=True)
    cache.mkdir(parents=True, exist_ok=True)
    for stale in cache.glob(f"fedora-shaped-{release}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    out.rename(repo)
    shutil.rmtree(work, ignore_errors=True)
    return repo
