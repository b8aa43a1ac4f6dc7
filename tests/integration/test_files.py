"""push and pull: files in and out of running containers, written and read by the
container's own root inside it, so a link planted inside cannot lead a write outside."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from lxcforge.store import Store
from tests.integration.conftest import lxcforge, made_by_new


def test_push_and_pull_one_and_many(minimal_store: Store, minimal_net: str, unique: str, tmp_path: Path) -> None:
    prefix = f"f{unique}-"
    names = made_by_new(minimal_store.root, minimal_net, prefix, 3)
    source = tmp_path / "motd"
    source.write_bytes(b"hello\x00binary\n")
    source.chmod(0o640)
    pushed = lxcforge(minimal_store.root, "push", str(source), f"{prefix}*:/root/motd")
    assert pushed.returncode == 0 and "3 of 3 succeeded" in pushed.stderr, pushed.stderr
    mode = lxcforge(minimal_store.root, "exec", names[0], "--", "stat", "-c", "%a", "/root/motd").stdout.strip()
    assert mode == "640"

    one = tmp_path / "one"
    assert lxcforge(minimal_store.root, "pull", f"{names[1]}:/root/motd", str(one)).returncode == 0
    assert one.read_bytes() == source.read_bytes()
    many = tmp_path / "many"
    pulled = lxcforge(minimal_store.root, "pull", f"{prefix}*:/root/motd", str(many), "--json")
    assert pulled.returncode == 0 and json.loads(pulled.stdout)["succeeded"] == 3
    assert all((many / name / "motd").read_bytes() == source.read_bytes() for name in names)

    missing = lxcforge(minimal_store.root, "pull", f"{names[0]}:/root/nothere", str(tmp_path / "none"))
    assert missing.returncode == 1 and not (tmp_path / "none").exists()
    bad = lxcforge(minimal_store.root, "push", str(source), "no-colon")
    assert bad.returncode == 1 and "NAME:/PATH" in bad.stderr and "hint:" in bad.stderr


def test_a_link_planted_inside_cannot_lead_a_push_outside(
    minimal_store: Store, minimal_net: str, unique: str, tmp_path: Path
) -> None:
    name = f"l{unique}"
    assert lxcforge(minimal_store.root, "new", name, "--network", minimal_net).returncode == 0
    host_file = tmp_path / "host-secret"
    host_file.write_text("host content\n")
    rootfs = minimal_store.container_path(name)
    # Root inside plants links: to the host path, and, from the host's point of view, out of
    # the rootfs with '..'.
    plant = f"ln -s {host_file} /root/to-host; ln -s ../../../../../../../../{host_file} /root/up-and-out"
    assert lxcforge(minimal_store.root, "exec", name, "--", "sh", "-c", plant).returncode == 0
    payload = tmp_path / "payload"
    payload.write_text("written by push\n")
    for link in ("/root/to-host", "/root/up-and-out"):
        assert lxcforge(minimal_store.root, "push", str(payload), f"{name}:{link}").returncode == 0
        assert (rootfs / link.lstrip("/")).read_text() == "written by push\n"
        assert not (rootfs / link.lstrip("/")).is_symlink()  # the link was replaced, not followed
    assert host_file.read_text() == "host content\n"


def test_names_complete_in_the_shell(minimal_store: Store, minimal_net: str, unique: str) -> None:
    name = f"cmp{unique}"
    assert lxcforge(minimal_store.root, "new", name, "--network", minimal_net).returncode == 0

    def complete(words: str) -> list[str]:
        env = {**os.environ, "LXCFORGE_CONFIG": "/nonexistent", "LXCFORGE_STORE": str(minimal_store.root),
               "_LXCFORGE_COMPLETE": "complete_bash", "COMP_WORDS": words,
               "COMP_CWORD": str(len(words.split()) - 1)}
        # The installed command: completion is keyed to the program's name.
        done = subprocess.run([str(Path(sys.executable).parent / "lxcforge")], env=env, capture_output=True,
                              text=True)
        return done.stdout.split()

    assert complete(f"lxcforge info cmp{unique[:2]}") == [name]
    assert complete("lxcforge base info minimal") == ["minimal-1"]
    assert minimal_net in complete(f"lxcforge network rm {minimal_net[:4]}")
