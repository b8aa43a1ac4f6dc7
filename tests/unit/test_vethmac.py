"""udev's .link file that keeps containers' veth MACs (lxcforge/vethmac.py)."""

import configparser
from pathlib import Path

import pytest

from lxcforge import vethmac


def test_the_link_file_matches_veths_only_and_keeps_their_mac() -> None:
    link = configparser.ConfigParser()
    link.read_string(vethmac.LINK_TEXT)
    assert dict(link["Match"]) == {"driver": "veth"}
    assert dict(link["Link"]) == {"macaddresspolicy": "none"}
    # udev applies the first .link file that matches, in name order: before 99-default.link.
    assert vethmac.LINK.name < "99-default.link" and vethmac.LINK.suffix == ".link"


def test_applies_only_where_systemd_and_udev_run(tmp_path: Path) -> None:
    systemd, udev = tmp_path / "systemd", tmp_path / "control"
    assert not vethmac.applies(systemd, udev)
    systemd.mkdir()
    assert not vethmac.applies(systemd, udev)
    udev.touch()
    assert vethmac.applies(systemd, udev)


def test_install_writes_once_and_reloads_udev(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[list[str]] = []
    monkeypatch.setattr(vethmac, "run", lambda argv, check=True: ran.append(list(argv)))
    link = tmp_path / "network" / "10-lxcforge-veth.link"
    assert vethmac.missing(link)
    assert vethmac.install(link) is True
    assert link.read_text() == vethmac.LINK_TEXT and not vethmac.missing(link)
    assert ran == [["udevadm", "control", "--reload"]]
    assert vethmac.install(link) is False and len(ran) == 1
    link.write_text("[Match]\nDriver=veth\n")  # someone else's content: rewritten
    assert vethmac.install(link) is True
