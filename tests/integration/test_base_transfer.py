"""`lxcforge base export` and `base import` for real: a minimal base carried to a second loop
pool (plain, compressed, through a pipe) keeps its distro, release and creation time and
starts containers; bad input and a killed import leave the store as it was."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lxcforge import faults, store
from lxcforge.store import Store
from tests.integration.conftest import loop_pool, lxcforge

BASE = "minimal-1"  # what the minimal_store fixture builds


@pytest.fixture
def store2(tmp_path: Path) -> Iterator[Store]:
    """A second loop pool: the 'other host'."""
    with loop_pool(tmp_path, "store2") as pool:
        yield pool


def listed(pool: Store) -> dict[str, dict[str, object]]:
    result = lxcforge(pool.root, "base", "list", "--json")
    assert result.returncode == 0, result.stderr
    return {b["name"]: b for b in json.loads(result.stdout)}


def snapshot_of(pool: Store) -> tuple[list[str], list[str]]:
    """What a failed import must leave unchanged: the bases and tmp/."""
    return sorted(p.name for p in pool.bases.iterdir()), sorted(p.name for p in pool.tmp.iterdir())


def assert_one_line_error(result: subprocess.CompletedProcess[str], text: str) -> None:
    assert result.returncode == 1, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error:") and lines[1].startswith("hint:"), result.stderr
    assert text in lines[0], result.stderr


def pipe(source: Store, target: Store, *import_args: str) -> tuple[int, int, str]:
    """`base export BASE -` piped into `base import -`: both return codes, import's stdout."""
    env = {**os.environ, "LXCFORGE_CONFIG": "/nonexistent"}
    cli = [sys.executable, "-m", "lxcforge"]
    export = subprocess.Popen([*cli, "--store", str(source.root), "base", "export", BASE, "-"],
                              stdout=subprocess.PIPE, env=env)
    received = subprocess.run([*cli, "--store", str(target.root), "base", "import", "-", *import_args],
                              stdin=export.stdout, capture_output=True, text=True, env=env, timeout=300)
    assert export.stdout is not None
    export.stdout.close()
    return export.wait(timeout=60), received.returncode, received.stdout


@pytest.mark.parametrize("compress", [[], ["--compress"], ["--compression", "gzip"]],
                         ids=["plain", "auto", "gzip"])
def test_round_trip_to_another_store_then_a_container_starts_from_it(
    minimal_store: Store, minimal_net: str, store2: Store, tmp_path: Path, unique: str, compress: list[str]
) -> None:
    exported = lxcforge(minimal_store.root, "base", "export", BASE, str(tmp_path / "b.base"), *compress, "--json")
    assert exported.returncode == 0, exported.stderr
    report = json.loads(exported.stdout)
    data = (tmp_path / "b.base").read_bytes()
    assert data.startswith(b"LXCFORGE-BASE 1\n")
    header = json.loads(data.split(b"\n", 2)[1])
    assert header["name"] == BASE and header["compression"] == report["compression"]
    stream = data.split(b"\n", 2)[2]
    if compress:
        assert report["compression"] in ("zstd", "gzip")
        assert store.detect_compression(stream) == report["compression"]
    else:
        assert report["compression"] is None and stream.startswith(store.SEND_STREAM_MAGIC)
    assert report["file_bytes"] == len(data)
    assert not list(tmp_path.glob(".b.base.partial*"))

    imported = lxcforge(store2.root, "base", "import", str(tmp_path / "b.base"), "--json")
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["base"]["name"] == BASE

    original, copy = listed(minimal_store)[BASE], listed(store2)[BASE]
    for key in ("distro", "release", "created"):
        assert copy[key] == original[key], key
    base = store2.base_path(BASE)
    assert store.is_subvolume(base) and store.is_read_only(base)
    assert list(store2.tmp.iterdir()) == []

    name = f"bt{unique}"
    try:
        made = lxcforge(store2.root, "new", name, "--network", minimal_net, "--json")
        assert made.returncode == 0, made.stderr
        assert json.loads(made.stdout)["created"][0]["leased"] is True
    finally:
        destroyed = lxcforge(store2.root, "destroy", "--missing-ok", name)
        assert destroyed.returncode == 0, destroyed.stderr

    # Removing the base takes its sidecar (the kept creation time) with it.
    assert lxcforge(store2.root, "base", "rm", BASE).returncode == 0
    assert not store2.base_meta_path(BASE).exists()


def test_through_a_pipe(minimal_store: Store, store2: Store) -> None:
    export_rc, import_rc, out = pipe(minimal_store, store2, "--name", "piped", "--json")
    assert (export_rc, import_rc) == (0, 0), out
    assert json.loads(out)["base"]["name"] == "piped"
    assert listed(store2)["piped"]["created"] == listed(minimal_store)[BASE]["created"]
    assert list(store2.tmp.iterdir()) == []


def test_bad_input_changes_nothing(minimal_store: Store, store2: Store, tmp_path: Path) -> None:
    good = tmp_path / "good.base"
    assert lxcforge(minimal_store.root, "base", "export", BASE, str(good), "--compress").returncode == 0
    data = good.read_bytes()
    random_file = tmp_path / "random"
    random_file.write_bytes(os.urandom(4096))
    truncated = tmp_path / "truncated.base"
    truncated.write_bytes(data[: len(data) // 2])
    header_only = tmp_path / "header-only.base"
    header_only.write_bytes(data[: data.index(b"\n", len(b"LXCFORGE-BASE 1\n")) + 1])
    assert lxcforge(store2.root, "base", "import", str(good), "--name", "existing").returncode == 0

    before = snapshot_of(store2)
    cases = [
        ([str(random_file)], "is not an lxcforge base export"),
        ([str(truncated)], "incomplete or damaged"),
        ([str(header_only)], "there is no base in it"),
        ([str(tmp_path / "missing")], "cannot read"),
        ([str(good), "--name", "existing"], "already exists"),
        ([str(good), "--name", "../escape"], "invalid base name"),
    ]
    for args, text in cases:
        assert_one_line_error(lxcforge(store2.root, "base", "import", *args), text)
        assert snapshot_of(store2) == before, args

    # The stream cut short on its way through a pipe.
    env = {**os.environ, "LXCFORGE_CONFIG": "/nonexistent"}
    cut = subprocess.run(f"head -c {len(data) - 100} {good} | {sys.executable} -m lxcforge --store {store2.root} "
                         "base import - --name cut", shell=True, capture_output=True, text=True, env=env)
    assert_one_line_error(cut, "incomplete or damaged")
    assert snapshot_of(store2) == before

    forced = lxcforge(store2.root, "base", "import", str(good), "--name", "existing", "--force")
    assert forced.returncode == 0, forced.stderr
    assert list(store2.tmp.iterdir()) == []


def test_killed_after_receive_leaves_nothing_after_the_next_command(
    minimal_store: Store, store2: Store, tmp_path: Path
) -> None:
    exported = tmp_path / "b.base"
    assert lxcforge(minimal_store.root, "base", "export", BASE, str(exported)).returncode == 0
    killed = lxcforge(store2.root, "base", "import", str(exported), env={faults.ENV: "base.received"})
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr)
    assert list(store2.tmp.iterdir()), "a killed import leaves its temporary subvolume"
    assert not store2.base_path(BASE).exists()

    assert listed(store2) == {}
    assert list(store2.tmp.iterdir()) == []

    # The name is free at once; its dead holder's lock file goes too.
    again = lxcforge(store2.root, "base", "import", str(exported))
    assert again.returncode == 0, again.stderr
    assert BASE in listed(store2)
    assert [p.name for p in store2.locks.glob("*.lock") if p.name != "addresses.lock"] == []
