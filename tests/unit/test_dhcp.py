"""Withdrawn reservations and what dnsmasq still holds of them, on a directory (no dnsmasq)."""

import os
import signal
import time
from pathlib import Path

import pytest

from lxcforge import dhcp, network
from lxcforge.ops import addresses


@pytest.fixture
def hostsdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A hosts directory, and a pid file for network 'n' as libvirt writes it when dnsmasq starts."""
    monkeypatch.setattr(dhcp, "PID_DIR", tmp_path / "run")
    (tmp_path / "run").mkdir()
    started = tmp_path / "run" / "n.pid"
    started.write_text("999999999\n")
    os.utime(started, (time.time() - 60, time.time() - 60))
    return str(tmp_path / "hosts")


WEB = network.DhcpHost("02:4c:46:00:00:01", "10.0.0.2", "web")


def test_a_withdrawn_reservation_is_held_until_forgotten(hostsdir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    dhcp.publish(hostsdir, WEB)
    assert dhcp.published(hostsdir) == [(WEB.mac, "web")] and dhcp.held(hostsdir, "n") == []
    dhcp.withdraw(hostsdir, WEB.mac)
    assert dhcp.published(hostsdir) == []
    assert dhcp.held(hostsdir, "n") == [WEB]
    # dnsmasq skips dotfiles: the note is never read as a reservation.
    assert all(p.name.startswith(".") for p in Path(hostsdir).iterdir())

    signals: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: signals.append((pid, sig)))
    dhcp.forget("n", hostsdir)
    assert signals == [(999999999, signal.SIGHUP)] and dhcp.held(hostsdir, "n") == []


def test_publishing_the_same_mac_again_ends_its_note(hostsdir: str) -> None:
    dhcp.publish(hostsdir, WEB)
    dhcp.withdraw(hostsdir, WEB.mac)
    dhcp.publish(hostsdir, WEB)
    assert dhcp.held(hostsdir, "n") == [] and dhcp.published(hostsdir) == [(WEB.mac, "web")]


def test_notes_from_before_dnsmasq_started_are_void(hostsdir: str, tmp_path: Path) -> None:
    dhcp.publish(hostsdir, WEB)
    dhcp.withdraw(hostsdir, WEB.mac)
    # dnsmasq restarted since: it read the directory afresh. (File times are coarse: within
    # one tick a note counts as held, which only leaves an address alone a while longer.)
    os.utime(tmp_path / "run" / "n.pid", (time.time() + 1, time.time() + 1))
    assert dhcp.held(hostsdir, "n") == [] and [p.name for p in dhcp.void_notes(hostsdir, "n")] == [
        ".024c46000001.withdrawn"]
    (tmp_path / "run" / "n.pid").unlink()  # not running: it reads the directory when it starts
    assert dhcp.held(hostsdir, "n") == [] and len(dhcp.void_notes(hostsdir, "n")) == 1


PLAN = network.NetworkPlan("n", "br", None, ((network.ipaddress.IPv4Address("10.0.0.2"),
                                              network.ipaddress.IPv4Address("10.0.0.4")),), hostsdir="/x")


def test_planning_leaves_held_addresses_and_macs_alone() -> None:
    held = [network.DhcpHost(network.mac_for("old", 0, "/s"), "10.0.0.2", "old")]
    entry = addresses.choose_address(PLAN, "old2", None, [], "/s", held)
    assert entry.ip == "10.0.0.3"
    # The same name takes back its own entry, the very line dnsmasq holds.
    assert addresses.choose_address(PLAN, "old", None, [], "/s", held) == held[0]
    # ...but not at another address: then another MAC, and dnsmasq never holds two for one MAC.
    moved = addresses.choose_address(PLAN, "old", "10.0.0.4", [], "/s", held)
    assert moved.mac != held[0].mac and network.owned_by(moved.mac, "old", "/s")
    with pytest.raises(addresses.AddressHeld):
        addresses.choose_address(PLAN, "x", "10.0.0.2", [], "/s", held)
    # Another store's container of that name leaves it alone: the MAC says whose it is.
    other = addresses.choose_address(PLAN, "old", None, [], "/other", held)
    assert other.ip != "10.0.0.2" and other.mac != held[0].mac


def test_only_held_addresses_left_asks_for_a_reload() -> None:
    held = [network.DhcpHost(network.mac_for(f"h{i}", 0, "/s"), f"10.0.0.{i}", f"h{i}") for i in (2, 3)]
    full = network.NetworkPlan(**{**PLAN.__dict__, "hosts": (network.DhcpHost("02:4c:46:00:00:09", "10.0.0.4"),)})
    with pytest.raises(addresses.AddressHeld):
        addresses.choose_address(full, "new", None, [], "/s", held)
    assert addresses.choose_address(full, "new", None, [], "/s").ip == "10.0.0.2"
    with pytest.raises(addresses.CapacityError) as exhausted:
        addresses.choose_address(full, "new", None, ["10.0.0.2", "10.0.0.3"], "/s")
    assert not isinstance(exhausted.value, addresses.AddressHeld)


def test_release_packet_fields() -> None:
    import socket
    import struct

    from lxcforge import network

    host = network.DhcpHost("02:4c:46:aa:bb:cc", "10.99.0.7")
    packet = dhcp.release_packet(host, "10.99.0.1", "01:02:4c:46:aa:bb:cc")
    assert len(packet) == 548  # dhcp_release's fixed size
    op, htype, hlen = packet[0], packet[1], packet[2]
    assert (op, htype, hlen) == (1, 1, 6)
    assert socket.inet_ntoa(packet[12:16]) == "10.99.0.7"  # ciaddr: the address given back
    assert packet[28:34] == bytes.fromhex("024c46aabbcc")
    assert struct.unpack("!I", packet[236:240])[0] == 0x63825363
    options = packet[240:]
    assert options[:3] == bytes([53, 1, 7])  # DHCPRELEASE
    assert options[3:5] == bytes([54, 4]) and socket.inet_ntoa(options[5:9]) == "10.99.0.1"
    assert options[9:11] == bytes([61, 7]) and options[11:18] == bytes.fromhex("01024c46aabbcc")
    assert options[18] == 255
    # Without a client id (or '*'), no option 61.
    assert dhcp.release_packet(host, "10.99.0.1", "*")[249] == 255


def test_release_leases_goes_on_past_a_bad_client_id(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[bytes] = []

    class FakeSocket:
        def __init__(self, *args: object) -> None:
            pass

        def setsockopt(self, *args: object) -> None:
            pass

        def sendto(self, packet: bytes, address: tuple[str, int]) -> None:
            assert address == ("10.0.0.1", dhcp.DHCP_SERVER_PORT)
            sent.append(packet)

        def __enter__(self) -> "FakeSocket":
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    monkeypatch.setattr(dhcp.socket, "socket", FakeSocket)
    other = network.DhcpHost("02:4c:46:00:00:02", "10.0.0.3")
    dhcp.release_leases("br0", "10.0.0.1", [(WEB, "not hex"), (other, None)])
    assert [packet[12:16] for packet in sent] == [bytes([10, 0, 0, 3])]  # the second still went
