# What lxcforge needs on a host, by distribution: provision.sh installs it, build-box.sh bakes
# it into the Debian box; and install_missing, which both provision.sh and scripts/vagrant-test
# install with. Sourced, not run.
# shellcheck disable=SC2034
DEBIAN_PACKAGES=(
    libvirt-daemon-system libvirt-daemon-driver-lxc libvirt-clients libvirt-dev pkg-config
    dnsmasq-base dnsmasq-utils iptables iproute2 btrfs-progs libbtrfsutil-dev
    dnf rpm createrepo-c debootstrap busybox-static
    python3 python3-venv python3-dev gcc procps util-linux iputils-ping openssl zstd
)
FEDORA_PACKAGES=(
    libvirt-daemon-lxc libvirt-daemon-driver-network libvirt-daemon-config-network
    libvirt-client libvirt-devel pkgconf-pkg-config dnsmasq dnsmasq-utils iproute
    btrfs-progs libbtrfsutil-devel dnf rpm-build createrepo_c debootstrap busybox
    python3 python3-devel gcc procps-ng util-linux iputils openssl zstd
)
# What scripts/vagrant-test needs on the machine that runs the VM (not on lxcforge hosts).
VM_HOST_DEBIAN_PACKAGES=(
    vagrant vagrant-libvirt qemu-system-x86 qemu-utils libvirt-daemon-driver-qemu rsync openssh-client curl
)
VM_HOST_FEDORA_PACKAGES=(vagrant vagrant-libvirt qemu-kvm qemu-img rsync openssh-clients curl)

# install_missing DEBIAN_LIST FEDORA_LIST: the packages of the host's list (arrays named by
# the arguments) that are not installed yet, installed; nothing when all are. Uses the
# caller's log().
install_missing() {
    local -n debian_list=$1 fedora_list=$2
    local missing=() p
    if command -v apt-get >/dev/null; then
        for p in "${debian_list[@]}"; do
            dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
        done
        ((${#missing[@]})) || return 0
        log "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    elif command -v dnf >/dev/null; then
        for p in "${fedora_list[@]}"; do
            rpm -q --whatprovides "$p" >/dev/null 2>&1 || missing+=("$p")
        done
        ((${#missing[@]})) || return 0
        log "installing ${missing[*]}"
        dnf install -y -q "${missing[@]}"
    else
        echo "unsupported host: neither apt-get nor dnf found (Debian 12 or Fedora 39+ needed)" >&2
        exit 1
    fi
}
