# What lxcforge needs on a host, by distribution: provision.sh installs it, build-box.sh bakes
# it into the Debian box. Sourced, not run.
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
