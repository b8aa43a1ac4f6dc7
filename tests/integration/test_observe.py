"""Seeing a scaling test, on real containers: stats against a known CPU and memory load,
lifecycle events of a container started, killed and destroyed, a bulk run's timings written
and drawn, and Ansible reaching every container through lxcforge's own inventory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from lxcforge.store import Store
from tests.integration.conftest import lxcforge, lxcforge_started, made_by_new
from tests.support.ansible import assert_each_answers_with_its_name


def test_stats_sees_a_known_cpu_and_memory_load(minimal_store: Store, minimal_net: str, unique: str) -> None:
    name, idle = f"s{unique}", f"i{unique}"
    made = lxcforge(minimal_store.root, "new", name, idle, "--network", minimal_net, "--memory", "256M")
    assert made.returncode == 0, made.stderr
    # One busy loop (a core's worth) and ~100 MB held in a shell variable, left running.
    # (The subshell must outlive its sleep, or the shell execs it and drops the variable.)
    load = ('(while :; do :; done) >/dev/null 2>&1 & '
            '(a=$(head -c 100000000 /dev/zero | tr "\\0" x); sleep 600; echo ${#a}) >/dev/null 2>&1 & sleep 3')
    assert lxcforge(minimal_store.root, "exec", name, "--", "sh", "-c", load).returncode == 0
    shown = lxcforge(minimal_store.root, "stats", "--format", "json")
    assert shown.returncode == 0, shown.stderr
    usage = {row["name"]: row for row in json.loads(shown.stdout)}
    assert set(usage) == {name, idle}
    assert usage[name]["memory_bytes"] > 90_000_000 > usage[idle]["memory_bytes"]
    assert usage[name]["memory_limit_bytes"] == 256 * 1024**2
    assert usage[name]["cpu_seconds"] > 1.0 > usage[idle]["cpu_seconds"]
    assert usage[name]["tasks"] > usage[idle]["tasks"]
    assert usage[name]["rx_bytes"] > 0  # its DHCP exchange, counted in its own namespace

    # --watch: rates over the interval; the busy one near a full core, the idle one near none.
    proc = subprocess.Popen([sys.executable, "-m", "lxcforge", "--store", str(minimal_store.root), "stats",
                             "--watch", "--interval", "1", "--format", "json", "--sort", "cpu"],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "LXCFORGE_CONFIG": "/nonexistent"})
    try:
        assert proc.stdout is not None
        text = ""
        decoder = json.JSONDecoder()
        frame = None
        deadline = time.monotonic() + 20
        while frame is None and time.monotonic() < deadline:
            text += proc.stdout.readline()
            try:
                frame, _ = decoder.raw_decode(text)
            except ValueError:
                continue
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert frame is not None
    assert [row["name"] for row in frame] == [name, idle]  # sorted by CPU, busiest first
    assert frame[0]["cpu_percent"] > 40 and frame[1]["cpu_percent"] < 10, frame

    prometheus = lxcforge(minimal_store.root, "stats", name, "--format", "prometheus").stdout
    assert f'lxcforge_container_memory_bytes{{name="{name}"}}' in prometheus
    assert idle not in prometheus


def test_events_of_a_container_started_killed_and_destroyed(
    minimal_store: Store, minimal_net: str, unique: str
) -> None:
    name = f"e{unique}"
    stream = lxcforge_started(minimal_store.root, "events", name, "--json", "--until", "removed", "--timeout", "60")
    try:
        time.sleep(1.5)  # subscribed
        assert lxcforge(minimal_store.root, "new", name, "--network", minimal_net).returncode == 0
        info = json.loads(lxcforge(minimal_store.root, "info", name, "--json").stdout)
        assert info["state"] == "running"
        controller = subprocess.run(["pgrep", "-f", f"libvirt_lxc --name {name} "], capture_output=True,
                                    text=True).stdout.split()[0]
        init = subprocess.run(["pgrep", "-P", controller], capture_output=True, text=True).stdout.split()[0]
        os.kill(int(init), 9)  # crashed: its init killed
        deadline = time.monotonic() + 20
        while lxcforge(minimal_store.root, "info", name, "--json").stdout.count('"running"') and \
                time.monotonic() < deadline:
            time.sleep(0.2)
        assert lxcforge(minimal_store.root, "destroy", name).returncode == 0
        out, errors = stream.communicate(timeout=60)
    finally:
        stream.kill()
    assert stream.returncode == 0, errors
    seen = [(e["source"], e["event"]) for e in map(json.loads, out.splitlines())]
    assert all(json.loads(line)["name"] == name for line in out.splitlines())
    for expected in [("lxcforge", "reserved"), ("libvirt", "defined"), ("libvirt", "started"),
                     ("lxcforge", "leased"), ("libvirt", "stopped"), ("libvirt", "undefined"),
                     ("lxcforge", "removed")]:
        assert expected in seen, seen
    # In the order they happened.
    assert seen.index(("libvirt", "started")) < seen.index(("libvirt", "stopped")) < \
        seen.index(("libvirt", "undefined"))


def test_a_bulk_runs_timings_are_written_and_drawn(
    minimal_store: Store, minimal_net: str, unique: str, tmp_path: Path
) -> None:
    prefix = f"r{unique}-"
    # A bad file name is refused before anything is made.
    refused = lxcforge(minimal_store.root, "new", "--count", "2", "--prefix", prefix, "--network", minimal_net,
                       "--report", str(tmp_path / "run.txt"))
    assert refused.returncode != 0 and ".jsonl" in refused.stderr
    assert not list((minimal_store.root / "containers").glob(f"{prefix}*"))

    made = lxcforge(minimal_store.root, "new", "--count", "6", "--prefix", prefix, "--network", minimal_net,
                    "--report", str(tmp_path / "new.jsonl"), "--json")
    assert made.returncode == 0, made.stderr
    ran = lxcforge(minimal_store.root, "exec", f"{prefix}*", "--report", str(tmp_path / "exec.jsonl"), "--", "true")
    assert ran.returncode == 0, ran.stderr
    destroyed = lxcforge(minimal_store.root, "destroy", f"{prefix}*", "--report", str(tmp_path / "destroy.csv"))
    assert destroyed.returncode == 0, destroyed.stderr
    document = json.loads(made.stdout)
    assert document["before_first_seconds"] >= 0 and document["seconds"] >= document["parallel_seconds"]

    summarised = lxcforge(None, "report", str(tmp_path / "new.jsonl"), str(tmp_path / "destroy.csv"), "--json",
                          "-o", str(tmp_path / "runs.png"))
    assert summarised.returncode == 0, summarised.stderr
    new_run, destroy_run = json.loads(summarised.stdout)
    assert (new_run["action"], new_run["total"], new_run["succeeded"]) == ("new", 6, 6)
    assert {"snapshot", "fixups", "define", "start", "lease"} <= set(new_run["phase_p50_ms"])
    assert (destroy_run["action"], destroy_run["succeeded"]) == ("destroy", 6)
    exec_run = json.loads(lxcforge(None, "report", str(tmp_path / "exec.jsonl"), "--json").stdout)[0]
    assert (exec_run["action"], exec_run["succeeded"], list(exec_run["phase_p50_ms"])) == ("exec", 6, ["exec"])
    # The per-container times recomputed from the file match what the command itself printed.
    assert abs(new_run["p50_seconds"] - document["p50_seconds"]) < 0.05
    assert (tmp_path / "runs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = lxcforge(None, "report", str(tmp_path / "new.jsonl"), "-o", str(tmp_path / "run.html"))
    assert html.returncode == 0 and "<svg" in (tmp_path / "run.html").read_text()


def test_ansible_reaches_every_container_through_lxcforges_inventory(
    minimal_store: Store, minimal_net: str, unique: str, tmp_path: Path
) -> None:
    prefix = f"a{unique}-"
    names = made_by_new(minimal_store.root, minimal_net, prefix, 8)
    inventory = tmp_path / "inventory.json"
    listed = lxcforge(minimal_store.root, "list", "--format", "ansible")
    assert listed.returncode == 0, listed.stderr
    inventory.write_text(listed.stdout)
    groups = json.loads(listed.stdout)["all"]["children"]
    assert sorted(groups[f"network_{minimal_net.replace('-', '_')}"]["hosts"]) == names
    assert_each_answers_with_its_name(inventory, "state_running", names, tmp_path / "ansible-home",
                                      ANSIBLE_INVENTORY_ENABLED="yaml", ANSIBLE_INVENTORY_UNPARSED_FAILED="True")
