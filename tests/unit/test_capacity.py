from lxcforge import network
from lxcforge.ops import bulk, capacity
from lxcforge.ops.capacity import HostLoad

DEFAULT_SYSCTLS = {
    "fs.inotify.max_user_instances": 128,
    "kernel.pid_max": 32768,
    "kernel.pty.max": 4096,
    "net.ipv4.neigh.default.gc_thresh3": 1024,
    "net.core.netdev_max_backlog": 1000,
}
LOAD = HostLoad(running_containers=0, pids_in_use=200, ptys=2, mem_available=20 * 1024**3, libvirtd_nofile=65536,
                inotify_in_use=2)


def plan(name: str, subnet: str) -> network.NetworkPlan:
    return network.parse_network_xml(network.network_xml(name, subnet))


def evaluate(count: int, sysctls: dict[str, int] | None = None, free: int = 253, ports: int = 0,
             nets: tuple[str, ...] = ("default",)) -> list[capacity.Problem]:
    plans = {n: plan(n, f"10.{60 + i}.0.0/24") for i, n in enumerate(nets)}
    return capacity.evaluate(count, LOAD, plans, {n: free for n in nets}, {n: ports for n in nets}, 512 * 1024**2,
                             sysctls or DEFAULT_SYSCTLS, 65536, 100 * 1024**3, False)


def whats(problems: list[capacity.Problem]) -> set[str]:
    return {p.what for p in problems}


def test_default_inotify_limit_stops_at_about_21_systemd_containers() -> None:
    assert "inotify instances" not in whats(evaluate(21))
    problems = evaluate(22)
    inotify = next(p for p in problems if p.what == "inotify instances")
    assert "room for about 21 more" in inotify.detail
    assert "--tune-host" in inotify.fix


def test_tuned_host_has_room_for_hundreds() -> None:
    tuned = {name: value for name, value in capacity.TUNED.items()}
    assert whats(evaluate(250, tuned)) == set()


def test_addresses_and_bridge_ports_are_checked_per_network() -> None:
    tuned = dict(capacity.TUNED)
    assert "addresses" in whats(evaluate(300, tuned, free=253))
    assert "addresses" not in whats(evaluate(300, tuned, free=253, nets=("a", "b")))
    assert "bridge ports" in whats(evaluate(100, tuned, free=5000, ports=1000))


def test_arp_table_and_backlog_for_large_counts() -> None:
    problems = whats(evaluate(1100, {**capacity.TUNED, "net.ipv4.neigh.default.gc_thresh3": 1024}, free=5000,
                              nets=("a", "b")))
    assert "ARP table" in problems
    assert "netdev backlog" in whats(evaluate(400, {**capacity.TUNED, "net.core.netdev_max_backlog": 1000},
                                              free=500))


def test_require_lists_every_problem_with_fixes() -> None:
    problems = evaluate(300)
    try:
        capacity.require(problems)
    except Exception as exc:
        assert all(p.what in str(exc) for p in problems)
        assert "--tune-host" in (getattr(exc, "hint", "") or "")
    else:
        raise AssertionError("require() accepted problems")


def test_expand_names() -> None:
    assert bulk.expand_names(3, "web", []) == ["web1", "web2", "web3"]
    assert bulk.expand_names(None, None, ["a", "b"]) == ["a", "b"]
    for bad in ((None, None, []), (2, None, []), (None, None, ["a", "a"]), (None, None, ["A"])):
        try:
            bulk.expand_names(*bad)  # type: ignore[arg-type]
        except Exception as exc:
            assert getattr(exc, "hint", None)
        else:
            raise AssertionError(f"accepted {bad}")


def test_summary_percentiles() -> None:
    outcomes = [bulk.Outcome(f"c{i}", True, seconds=i / 10) for i in range(1, 101)]
    outcomes.append(bulk.Outcome("bad", False, "boom"))
    summary = bulk.Summary("new", outcomes, 12.0)
    assert abs((summary.percentile(50) or 0) - 5.05) < 0.1
    assert abs((summary.percentile(95) or 0) - 9.5) < 0.1
    assert summary.as_dict()["failed"] == [{"name": "bad", "error": "boom", "hint": None}]


def test_unprivileged_containers_of_one_range_need_kernel_keys() -> None:
    plans = {"default": plan("default", "10.60.0.0/24")}
    sysctls = {**DEFAULT_SYSCTLS, "kernel.keys.maxkeys": 200}

    def problems(unprivileged: bool) -> set[str]:
        return whats(capacity.evaluate(60, LOAD, plans, {"default": 253}, {"default": 0}, 512 * 1024**2, sysctls,
                                       65536, 100 * 1024**3, False, unprivileged=unprivileged))
    assert "kernel keys" in problems(True)  # 60 x 8 keys over the default quota of 200
    assert "kernel keys" not in problems(False)  # root's own quota is another
    assert "kernel keys" not in whats(evaluate(60, dict(capacity.TUNED)))


def test_inotify_instances_are_counted_only_near_the_limit() -> None:
    # 1000 containers on a tuned host: far from 8192, no scan of every process's descriptors.
    assert not capacity.must_count_inotify(1000, 20, capacity.TUNED["fs.inotify.max_user_instances"])
    assert capacity.must_count_inotify(1300, 20, capacity.TUNED["fs.inotify.max_user_instances"])
    # The default 128 is near from the first container: always counted, as before.
    assert capacity.must_count_inotify(0, 1, 128)
    assert not capacity.must_count_inotify(0, 1, None)


class _Running:
    def __init__(self, running: int) -> None:
        self.running = running

    def running_count(self) -> int:
        return self.running


def test_host_load_skips_the_inotify_scan_far_from_the_limit(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    scans = []
    monkeypatch.setattr(capacity.host, "inotify_instances_of_root", lambda: scans.append(1) or 7)
    far = capacity.host_load(_Running(10), 20, 8192)  # type: ignore[arg-type]
    assert scans == [] and far.inotify_in_use == 0
    near = capacity.host_load(_Running(10), 20, 128)  # type: ignore[arg-type]
    assert scans == [1] and near.inotify_in_use == 7
    assert near.pids_in_use > 0
