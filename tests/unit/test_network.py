import ipaddress

import pytest

from lxcforge import network
from tests.golden import assert_golden

DEFAULT = """
<network>
  <name>default</name>
  <forward mode='nat'/>
  <bridge name='virbr0' stp='on' delay='0'/>
  <ip address='192.168.122.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='192.168.122.2' end='192.168.122.254'/>
      <host mac='02:4c:46:00:00:01' name='web1' ip='192.168.122.2'/>
    </dhcp>
  </ip>
</network>
"""


def test_mac_is_stable_locally_administered_and_unicast() -> None:
    mac = network.mac_for("web1")
    assert mac == network.mac_for("web1")
    assert mac != network.mac_for("web2")
    first = int(mac.split(":")[0], 16)
    assert first & 0x02 and not first & 0x01


def test_unique_mac_steps_past_collisions() -> None:
    taken = [network.mac_for("web1"), network.mac_for("web1", 1)]
    assert network.unique_mac("web1", taken) == network.mac_for("web1", 2)


def test_parse_default_network() -> None:
    plan = network.parse_network_xml(DEFAULT)
    assert plan.bridge == "virbr0"
    assert plan.forward == "nat"
    assert plan.range_size() == 253
    assert plan.hosts == (network.DhcpHost("02:4c:46:00:00:01", "192.168.122.2", "web1"),)
    assert plan.gateway == ipaddress.IPv4Interface("192.168.122.1/24")


def test_pick_address_skips_reservations_and_avoided_leases() -> None:
    plan = network.parse_network_xml(DEFAULT)
    assert network.pick_address(plan) == "192.168.122.3"
    assert network.pick_address(plan, avoid=["192.168.122.3"]) == "192.168.122.4"
    assert len(network.free_addresses(plan)) == 252


def test_pick_address_returns_none_when_exhausted() -> None:
    plan = network.parse_network_xml(network.network_xml("tiny", "10.9.9.0/29"))
    free = network.free_addresses(plan)
    assert [str(a) for a in free] == [f"10.9.9.{i}" for i in range(2, 7)]
    assert network.pick_address(plan, avoid=[str(a) for a in free]) is None


def test_dhcp_host_xml_golden() -> None:
    host = network.DhcpHost(network.mac_for("web1"), "192.168.122.10", "web1")
    assert_golden("dhcp-host-web1.xml", network.dhcp_host_xml(host) + "\n")


def test_network_xml_golden_isolated_and_nat() -> None:
    assert_golden("network-isolated.xml", network.network_xml("lab", "10.77.0.0/16", isolated=True))
    nat = network.network_xml("big", "10.78.0.0/22")
    plan = network.parse_network_xml(nat)
    assert plan.forward == "nat" and plan.range_size() == 1021
    assert "stp=\"off\"" in nat


def test_network_xml_rejects_tiny_subnets() -> None:
    with pytest.raises(ValueError):
        network.network_xml("x", "10.0.0.0/30")


def test_lxcforge_networks_carry_a_dnsmasq_hosts_directory() -> None:
    plan = network.parse_network_xml(network.network_xml("lab", "10.77.0.0/24"))
    assert plan.hostsdir == network.hostsdir_for("lab")
    assert network.parse_network_xml(DEFAULT).hostsdir is None


def test_hostsdir_line() -> None:
    host = network.DhcpHost("02:4c:46:00:00:01", "10.77.0.9", "web1")
    assert network.hostsdir_line(host) == "02:4c:46:00:00:01,10.77.0.9,web1\n"


def test_free_subnet_avoids_used_ranges() -> None:
    import random

    used = [ipaddress.IPv4Network("10.0.0.0/8")]
    assert network.free_subnet(used, 24, random.Random(1)) is None
    used = [ipaddress.IPv4Network(f"10.{i}.0.0/16") for i in range(200, 254)]
    subnet = network.free_subnet(used, 24, random.Random(1))
    assert subnet is not None and subnet.startswith("10.254.") and subnet.endswith(".0/24")


def test_adopting_default_adds_a_hosts_directory_and_turns_stp_off_keeping_the_rest() -> None:
    assert not network.is_adopted(DEFAULT)
    adopted = network.adopted_network_xml(DEFAULT)
    plan, before = network.parse_network_xml(adopted), network.parse_network_xml(DEFAULT)
    assert plan.hostsdir == network.hostsdir_for("default")
    assert (plan.bridge, plan.forward, plan.gateway, plan.ranges, plan.hosts) == (
        before.bridge, before.forward, before.gateway, before.ranges, before.hosts)
    assert "stp=\"off\"" in adopted and network.is_adopted(adopted)
    assert network.adopted_network_xml(adopted) == adopted  # once is enough
    assert network.is_adopted(network.network_xml("lab", "10.77.0.0/16"))


def test_xml_with_hosts_adds_and_removes_a_batch_keeping_the_rest() -> None:
    lab = network.network_xml("lab", "10.77.0.0/24", isolated=True)
    first = network.DhcpHost("02:4c:46:00:00:02", "10.77.0.2", "a")
    second = network.DhcpHost("02:4c:46:00:00:03", "10.77.0.3", "b")
    added = network.xml_with_hosts(lab, [first, second])
    plan, before = network.parse_network_xml(added), network.parse_network_xml(lab)
    assert plan.hosts == (first, second)  # in order, after any others
    assert (plan.name, plan.bridge, plan.forward, plan.gateway, plan.ranges, plan.hostsdir) == (
        before.name, before.bridge, before.forward, before.gateway, before.ranges, before.hostsdir)
    assert plan.hostsdir is not None  # the dnsmasq namespace survives the round trip
    third = network.DhcpHost("02:4c:46:00:00:04", "10.77.0.4", "c")
    changed = network.parse_network_xml(network.xml_with_hosts(added, [third], ["02:4C:46:00:00:02"]))
    assert changed.hosts == (second, third)  # MACs compare without case, as libvirt's
    assert network.parse_network_xml(network.xml_with_hosts(DEFAULT, remove_macs=["02:4c:46:00:00:01"])).hosts == ()


def test_xml_with_hosts_refuses_a_network_without_dhcp() -> None:
    bare = "<network><name>bare</name><ip address='10.9.0.1' prefix='24'/></network>"
    with pytest.raises(ValueError):
        network.xml_with_hosts(bare, [network.DhcpHost("02:4c:46:00:00:02", "10.9.0.2", "a")])
    assert network.xml_with_hosts(bare, remove_macs=["02:4c:46:00:00:02"]) == bare


def test_the_gateway_is_the_address_that_serves_dhcp() -> None:
    two = """<network><name>two</name>
      <ip address='10.1.0.1' prefix='24'><dhcp><range start='10.1.0.2' end='10.1.0.9'/></dhcp></ip>
      <ip address='10.2.0.1' prefix='24'/>
    </network>"""
    assert str(network.parse_network_xml(two).gateway) == "10.1.0.1/24"
    bare = "<network><name>bare</name><ip address='10.9.0.1' prefix='24'/></network>"
    assert str(network.parse_network_xml(bare).gateway) == "10.9.0.1/24"


def _rewritten(xml: str, add: list[network.DhcpHost], remove: list[str]) -> str:
    """xml_with_hosts by parse and rewrite alone (its fallback)."""
    real = network._spliced_hosts
    try:
        network._spliced_hosts = lambda *_args: None  # type: ignore[assignment]
        return network.xml_with_hosts(xml, add, remove)
    finally:
        network._spliced_hosts = real


def test_xml_with_hosts_edits_libvirts_layout_as_the_rewrite_would() -> None:
    many = "".join(f"      <host mac='02:4c:46:00:{i // 256:02x}:{i % 256:02x}' name='w{i}' "
                   f"ip='10.77.{i // 250}.{i % 250 + 2}'/>\n" for i in range(300))
    big = DEFAULT.replace("      <host mac='02:4c:46:00:00:01' name='web1' ip='192.168.122.2'/>\n", many)
    ipv6 = DEFAULT.replace("</network>", "  <ip family='ipv6' address='fd00::1' prefix='64'>\n    <dhcp>\n"
                           "      <range start='fd00::2' end='fd00::ff'/>\n    </dhcp>\n  </ip>\n</network>")
    lab = network.network_xml("lab", "10.77.0.0/24", isolated=True)
    add = [network.DhcpHost("02:4c:46:01:00:01", "10.77.9.1", "n1"), network.DhcpHost("02:4c:46:01:00:02",
                                                                                    "10.77.9.2")]
    for xml in (DEFAULT, big, ipv6, lab):
        for remove in ([], ["02:4C:46:00:00:01", "02:4c:46:00:01:05"]):
            spliced = network._spliced_hosts(xml, add, remove)
            assert spliced is not None
            assert network.parse_network_xml(spliced) == network.parse_network_xml(_rewritten(xml, add, remove))
            assert spliced.replace(" ", "").count("<host") == xml.count("<host") + 2 - sum(
                xml.lower().count(f"mac='{m.lower()}'") + xml.lower().count(f'mac="{m.lower()}"') for m in remove)
    # Laid out otherwise (a host with a lease element, </dhcp> on a host's line): the rewrite.
    leased = DEFAULT.replace("ip='192.168.122.2'/>", "ip='192.168.122.2'><lease expiry='1' unit='hours'/></host>")
    compact = "<network><name>c</name><ip address='10.1.0.1' prefix='24'><dhcp><range start='10.1.0.2' " \
              "end='10.1.0.9'/></dhcp></ip></network>"
    assert network._spliced_hosts(leased, add, []) is None and network._spliced_hosts(compact, add, []) is None
    # A self-closed IPv4 <ip/> before an IPv6 one with DHCP: no IPv4 host goes into the IPv6 block.
    v4_without_dhcp = ("<network>\n  <name>n</name>\n  <ip address='10.0.1.1' prefix='24'/>\n"
                       "  <ip family='ipv6' address='fd00::1' prefix='64'>\n    <dhcp>\n"
                       "      <range start='fd00::2' end='fd00::ff'/>\n    </dhcp>\n  </ip>\n</network>\n")
    assert network._spliced_hosts(v4_without_dhcp, add, []) is None
    with pytest.raises(ValueError):
        network.xml_with_hosts(v4_without_dhcp, add)
    assert network.parse_network_xml(network.xml_with_hosts(compact, add)).hosts == tuple(add)


def test_spliced_reservations_quote_their_attributes_as_xml_does() -> None:
    lab = network.network_xml("lab", "10.77.0.0/24", isolated=True)
    odd = network.DhcpHost("02:4c:46:00:00:09", "10.77.0.9", "a\"b'<&>")
    spliced = network.xml_with_hosts(lab, [odd])
    assert network._spliced_hosts(lab, [odd], ()) == spliced  # the splice, not the rewrite
    assert network.parse_network_xml(spliced).hosts == (odd,)
