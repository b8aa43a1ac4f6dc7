"""A local RPM repository shaped like Fedora's, built with rpmbuild + createrepo_c, so the
Fedora path of `lxcforge base` can be tested with no Fedora mirror in reach.

It carries what the fix-ups act on and what a boot needs:
  setup           /etc/passwd, /etc/shadow, /etc/securetty WITHOUT console or pts/0,
                  /etc/pam.d/login with pam_securetty, SELinux enforcing, an fstab with a
                  disk that a container does not have, a fixed /etc/machine-id
  fedora-release  /etc/os-release, /etc/fedora-release
  systemd         a small init (static busybox): brings up eth0 with DHCP when
                  ifcfg-eth0 or a systemd-networkd file asks for it, keeps a login
                  prompt on the console, then waits
  stubs           the rest of the package set, empty, so the real names resolve
  lxtest-sysusers (optional) a system user declared only in a sysusers.d file, as Fedora 42+
                  packages do, and a file owned by it
Optionally every package is signed with a test key (rpmsign), for signature checks.
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
# A login prompt on the console, as systemd's console getty gives one.
(while :; do /usr/bin/busybox getty -l /bin/login 38400 console; sleep 1; done) &
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


SYSUSER = "lxtest"
SYSUSERS_CONF = f'u! {SYSUSER} - "lxcforge test service" /var/lib/{SYSUSER}\n'
SYSUSER_FILE = f"var/lib/{SYSUSER}/state"


def _spec(name: str, release: int, files: dict[str, tuple[str, int]], requires: tuple[str, ...] = (),
          owners: dict[str, str] | None = None) -> str:
    install = []
    listing = []
    for path, (source, mode) in files.items():
        install.append(f"install -D -m {mode:o} {source} %{{buildroot}}/{path}")
        owner = (owners or {}).get(path, "root")
        listing.append(f"%attr({mode:o},{owner},{owner}) /{path}")
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


def _inputs_digest(release: int, *extra: str) -> str:
    parts = [str(release), INIT, UDHCPC_SCRIPT, repr(sorted(SETUP_FILES.items())), repr(STUBS),
             hashlib.sha256(BUSYBOX.read_bytes()).hexdigest(), _spec("x", release, {}), SYSUSERS_CONF, *extra]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def signing_key(cache: Path = CACHE, name: str = "lxcforge test signing key") -> tuple[Path, Path]:
    """A GnuPG home with a signing key (made once, kept in the cache) and its public key file."""
    home = cache / "gnupg" / hashlib.sha256(name.encode()).hexdigest()[:8]
    public = home / "public.asc"
    if not public.exists():
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True, mode=0o700)
        subprocess.run(["gpg", "--homedir", str(home), "--batch", "--passphrase", "", "--quick-gen-key",
                        f"{name} <test@lxcforge.invalid>", "rsa2048", "sign", "never"],
                       check=True, capture_output=True)
        exported = subprocess.run(["gpg", "--homedir", str(home), "--armor", "--export"], check=True,
                                  capture_output=True, text=True).stdout
        public.write_text(exported)
    return home, public


def build_repo(release: int, cache: Path = CACHE, *, signed_by: Path | None = None,
               sysusers: bool = False) -> Path:
    """Build (or reuse from the cache) the repository for release; returns its directory.
    signed_by: a GnuPG home (signing_key()) to sign every package with; sysusers: add the
    lxtest-sysusers package."""
    extra = [f"signed:{(signed_by / 'public.asc').read_text() if signed_by else ''}", f"sysusers:{sysusers}"]
    digest = _inputs_digest(release, *extra)
    kind = ("-signed" if signed_by else "") + ("-sysusers" if sysusers else "") or "-plain"
    repo = cache / f"fedora-shaped-{release}{kind}-{digest}"
    if (repo / "repodata" / "repomd.xml").exists():
        return repo
    work = cache / f".build-{release}{kind}-{digest}"
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
    if sysusers:
        (sources / "lxtest.conf").write_text(SYSUSERS_CONF)
        (sources / "state").write_text("owned by the service's own user\n")
        specs["lxtest-sysusers"] = _spec("lxtest-sysusers", release, {
            "usr/lib/sysusers.d/lxtest.conf": (str(sources / "lxtest.conf"), 0o644),
            SYSUSER_FILE: (str(sources / "state"), 0o640)}, owners={SYSUSER_FILE: SYSUSER})
    out = work / "repo"
    for name, spec in specs.items():
        spec_path = work / f"{name}.spec"
        spec_path.write_text(spec)
        subprocess.run(["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {work / 'top'}",
                        "--define", f"_rpmdir {out}", str(spec_path)], check=True, capture_output=True)
    if signed_by is not None:
        key_id = subprocess.run(["gpg", "--homedir", str(signed_by), "--list-keys", "--with-colons"], check=True,
                                capture_output=True, text=True).stdout
        fingerprint = next(line.split(":")[9] for line in key_id.splitlines() if line.startswith("fpr"))
        # Debian's rpm looks for gpg2 by default.
        subprocess.run(["rpmsign", "--addsign", "--define", f"_gpg_name {fingerprint}",
                        "--define", f"_gpg_path {signed_by}", "--define", f"__gpg {shutil.which('gpg')}",
                        *map(str, sorted(out.rglob("*.rpm")))],
                       check=True, capture_output=True)
    subprocess.run(["createrepo_c", "--quiet", str(out)], check=True, capture_output=True)
    cache.mkdir(parents=True, exist_ok=True)
    for stale in cache.glob(f"fedora-shaped-{release}{kind}-" + "?" * len(digest)):
        shutil.rmtree(stale, ignore_errors=True)
    out.rename(repo)
    shutil.rmtree(work, ignore_errors=True)
    return repo
