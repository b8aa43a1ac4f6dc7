#!/bin/sh
# Known ways from a container's root to the host, each tried and reported as one line:
# "PROBE open|closed: detail". Run inside the container (as its root, through lxcforge exec).
# Nothing here changes the host: the one write to a host setting writes its own value back.
# Needs only sh, coreutils, util-linux and perl (perl-base is essential in Debian).
work=$(mktemp -d /tmp/probes.XXXXXX)
say() { echo "$1 $2: $3"; }

# 1-2. A cgroup mount, v1 or v2: the host's hierarchy root (every container's groups, and on
# cgroup v2 hosts the host's own services) and its release_agent (run as root on the host
# when a group empties: CVE-2022-0492's class).
mkdir "$work/cg"
host_root() { [ -d "$1/machine" ] || [ -d "$1/machine.slice" ] || [ -d "$1/lxcforge" ]; }
root=
if mount -t cgroup -o memory cgroup "$work/cg" 2>/dev/null; then
    host_root "$work/cg" && root="memory hierarchy: $(ls "$work/cg" | grep -m1 -E '^(machine|lxcforge)')/ visible"
    umount "$work/cg"
fi
# cgroup2 mounts are allowed in a user namespace too: there the host's root may show, but
# it is the host root's, read-only (moving a process needs a writable cgroup.procs).
if mount -t cgroup2 cgroup2 "$work/cg" 2>/dev/null; then
    host_root "$work/cg" && [ -w "$work/cg/cgroup.procs" ] &&
        root="$root${root:+; }cgroup2: $(ls "$work/cg" | grep -m1 -E '^(machine|lxcforge)')/ visible, writable"
    umount "$work/cg"
fi
if [ -n "$root" ]; then say cgroup-host-root open "$root"
else say cgroup-host-root closed "mounts refused or show the container's own group"; fi
agents=
while IFS=: read -r _ controllers _; do
    [ -n "$controllers" ] || continue
    case "$controllers" in name=*) opts="none,$controllers" ;; *) opts="$controllers" ;; esac
    mount -t cgroup -o "$opts" cgroup "$work/cg" 2>/dev/null || continue
    # Present and writable (in a user namespace it is the host root's, read-only).
    [ -e "$work/cg/release_agent" ] && [ -w "$work/cg/release_agent" ] && agents="$agents $controllers"
    umount "$work/cg"
done < /proc/self/cgroup
if [ -n "$agents" ]; then say release-agent open "in$agents"; else say release-agent closed "none reachable"; fi

# 3. A raw block device: a devtmpfs has every device node; the devices cgroup decides.
# Widen every devices.allow reachable (the fresh hierarchy's root, and libvirt's group
# as seen through it), then read one block of each disk.
mkdir "$work/dev" "$work/devcg"
if mount -t devtmpfs devtmpfs "$work/dev" 2>/dev/null; then
    if mount -t cgroup -o devices cgroup "$work/devcg" 2>/dev/null; then
        own=$(sed -n 's/^[0-9]*:devices://p' /proc/self/cgroup)
        for allow in "$work/devcg/devices.allow" "$work/devcg$own/devices.allow"; do
            [ -e "$allow" ] && echo a > "$allow" 2>/dev/null
        done
        umount "$work/devcg"
    fi
    read_ok=
    for disk in /sys/block/*; do
        node="$work/dev/${disk##*/}"
        [ -b "$node" ] && dd if="$node" of=/dev/null bs=512 count=1 2>/dev/null && read_ok="$read_ok ${disk##*/}"
    done
    umount "$work/dev"
    if [ -n "$read_ok" ]; then say raw-block-device open "read$read_ok"; else say raw-block-device closed "no disk readable"; fi
else
    say raw-block-device closed "devtmpfs refused"
fi

# 4. /proc/sys through a fresh procfs (libvirt's /proc/sys is read-only): core_pattern runs
# a host program as root on any crash. Its own value written back.
mkdir "$work/proc"
if mount -t proc proc "$work/proc" 2>/dev/null; then
    pattern=$(cat "$work/proc/sys/kernel/core_pattern")
    if printf '%s\n' "$pattern" > "$work/proc/sys/kernel/core_pattern" 2>/dev/null; then
        say proc-sys open "kernel.core_pattern writable"
    else
        say proc-sys closed "kernel.core_pattern refused"
    fi
    umount "$work/proc"
else
    say proc-sys closed "procfs mount refused"
fi

# 5-8. System calls a container has no use for, each answered EPERM when refused.
perl -e '
use strict;
sub report { my ($name, $ok, $detail) = @_; printf "%s %s: %s\n", $name, $ok ? "open" : "closed", $detail; }
# finit_module(-1): EPERM without CAP_SYS_MODULE, EBADF with it.
my $none = ""; syscall(313, -1, $none, 0); my $e = $! + 0;
# ENOSYS: a kernel without module loading.
report("kernel-module", $e != 1 && $e != 38, "finit_module: $!");
# bpf(BPF_PROG_LOAD) of "r0 = 0; exit" as a socket filter.
my $insns = pack("C16", 0xb7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0);
my $license = "GPL\0";
my $attr = pack("LLQQLLQLL", 1, 2, unpack("Q", pack("p", $insns)), unpack("Q", pack("p", $license)),
                0, 0, 0, 0, 0) . ("\0" x 80);
my $fd = syscall(321, 5, $attr, length($attr));
report("bpf-load", $fd >= 0, $fd >= 0 ? "program loaded" : "bpf: $!");
# iopl(3): raw I/O ports, CAP_SYS_RAWIO.
my $r = syscall(172, 3); report("raw-io", $r == 0, $r == 0 ? "iopl(3) granted" : "iopl: $!");
# In a user namespace, capabilities and ptrace reach only objects of the container.
open(my $map, "<", "/proc/self/uid_map") or die;
my $userns = (join(" ", split(" ", scalar <$map>)) ne "0 0 4294967295");
# Capabilities that open such doors, held in the bounding set.
my %risky = (2 => "dac_read_search", 16 => "sys_module", 17 => "sys_rawio", 19 => "sys_ptrace",
             25 => "sys_time", 27 => "mknod", 34 => "syslog", 38 => "perfmon", 39 => "bpf");
open(my $status, "<", "/proc/self/status") or die;
my ($bounding) = map { /^CapBnd:\s+(\S+)/ ? hex($1) : () } <$status>;
my @held = map { $risky{$_} } grep { $bounding & (1 << $_) } sort { $a <=> $b } keys %risky;
if ($userns) { report("risky-capabilities", 0, "user namespace: they hold only inside it"); }
else { report("risky-capabilities", scalar(@held), @held ? "@held" : "none of @{[sort values %risky]}"); }
# open_by_handle_at: any file of a mounted filesystem by handle, CAP_DAC_READ_SEARCH.
my $handle = pack("Li", 8, 1) . ("\0" x 8);
syscall(304, -100, $handle, 0); $e = $! + 0;
report("open-by-handle", $e != 1, "open_by_handle_at: $!");
# ptrace(ATTACH) of a process of another user (CAP_SYS_PTRACE), if the container has one.
my ($target) = grep { my @s = stat("/proc/$_"); @s && $s[4] != 0 } map { m{/(\d+)$} ? $1 : () } glob("/proc/[0-9]*");
if ($userns) {
    report("ptrace-other-user", 0, "user namespace: every process it can see is its own");
} elsif (defined $target) {
    my $a = syscall(101, 0x4206, $target + 0, 0, 0);  # PTRACE_SEIZE: no stop
    if ($a == 0) { report("ptrace-other-user", 1, "attached to $target"); }
    else { report("ptrace-other-user", 0, "ptrace: $!"); }
}
'
rmdir "$work/cg" "$work/dev" "$work/devcg" "$work/proc" "$work"
