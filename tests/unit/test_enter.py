"""Entering a container: security labels as libvirt's drivers apply them, and setpriv's
bounding-set argument."""

from __future__ import annotations

import pytest

from lxcforge import enter
from lxcforge.ops import exec_many


def test_security_labels_as_libvirts_drivers_apply_them() -> None:
    assert enter.setpriv_label_options(None) == []
    assert enter.setpriv_label_options(("selinux", "system_u:system_r:svirt_lxc_net_t:s0:c1,c2")) == [
        "--selinux-label", "system_u:system_r:svirt_lxc_net_t:s0:c1,c2"]
    assert enter.setpriv_label_options(("apparmor", "libvirt-1234")) == ["--apparmor-profile", "libvirt-1234"]
    with pytest.raises(ValueError):
        enter.setpriv_label_options(("smack", "x"))


def test_setpriv_keeps_exactly_the_inits_capabilities() -> None:
    assert exec_many.setpriv_caps(0b1011, 3) == "-all,+cap_0,+cap_1,+cap_3"
    assert exec_many.setpriv_caps(0, 40) == "-all"
