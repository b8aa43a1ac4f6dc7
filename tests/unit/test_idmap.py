"""Shifting a base's ownership into an id range (run as root: chown)."""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

import pytest

from lxcforge import domain, idmap

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")


@needs_root
def test_shift_tree_moves_owners_keeps_setid_bits_and_never_follows_links(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "usr/bin").mkdir(parents=True)
    passwd = root / "usr/bin/passwd"
    passwd.write_text("")
    passwd.chmod(0o4755)
    owned = root / "home"
    owned.mkdir()
    os.chown(owned, 1000, 1000)
    outside = tmp_path / "host-file"
    outside.write_text("")
    (root / "escape").symlink_to(outside)
    odd = root / "odd"
    odd.write_text("")
    os.chown(odd, 70000, 70000)  # beyond the range: the range's nobody

    changed = idmap.shift_tree(root, 100000)

    assert changed == 7  # rootfs, usr, usr/bin, passwd, home, escape, odd
    assert (root.stat().st_uid, passwd.stat().st_uid, owned.stat().st_uid) == (100000, 100000, 101000)
    assert stat.S_IMODE(passwd.stat().st_mode) == 0o4755  # chown cleared it; shifting puts it back
    assert outside.stat().st_uid == 0 and (root / "escape").lstat().st_uid == 100000
    assert odd.stat().st_uid == 100000 + idmap.NOBODY


def test_file_capabilities_become_version_3_owned_by_the_ranges_root() -> None:
    v2 = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)  # cap_net_raw+ep
    v3 = idmap.capability_v3(v2, 100000)
    assert v3 is not None and len(v3) == 24
    magic, permitted, _inh, _p2, _i2, rootid = struct.unpack("<IIIIII", v3)
    assert (magic, permitted, rootid) == (0x03000001, 1 << 13, 100000)
    assert idmap.capability_v3(b"\x01\x00\x00\x01", 100000) is None


def test_offsets_outside_the_id_space_are_refused() -> None:
    idmap.check_offset(100000)
    for bad in (0, 1000, 2**32 - 100):
        with pytest.raises(ValueError):
            idmap.check_offset(bad)


def test_an_unprivileged_domain_maps_uids_and_gids() -> None:
    spec = domain.ContainerSpec(name="u1", uuid="6a0e2f6c-0000-4000-8000-000000000001", rootfs=Path("/r"),
                                network="default", mac="52:54:00:00:00:01", idmap_offset=100000)
    xml = domain.domain_xml(spec)
    assert '<uid start="0" target="100000" count="65536" />' in xml
    assert '<gid start="0" target="100000" count="65536" />' in xml
    assert "<idmap>" not in domain.domain_xml(domain.ContainerSpec(name="p", uuid=spec.uuid, rootfs=Path("/r"),
                                                                   network="default", mac=spec.mac))
