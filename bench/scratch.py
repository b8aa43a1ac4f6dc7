"""What the bench scripts share: a temporary loop-pool store with a minimal base on an
isolated network of its own, removed afterwards whatever happened; the host's facts come
from bench/hostfacts.py."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench.churn import free_subnet, lxcforge
from bench.hostfacts import cpu_model, host_line

__all__ = ["cpu_model", "host_line", "minimal_store"]


@contextlib.contextmanager
def minimal_store(tag: str, subnet_prefix: int = 24) -> Iterator[tuple[Path, str]]:
    """(store, network): a minimal base in a temporary loop pool, an isolated network on a
    free subnet; containers, network, pool and files are removed on the way out."""
    work = Path(tempfile.mkdtemp(prefix=f"lxcforge-{tag}-"))
    work.chmod(0o711)  # unprivileged containers' roots must pass through to their stores
    store = work / "store"
    net = f"lxf{tag[:1]}-{os.urandom(2).hex()}"
    try:
        made = lxcforge(store, "network", "create", net, "--subnet", free_subnet(subnet_prefix), "--isolated")
        if made.returncode:
            raise SystemExit(made.stderr)
        built = lxcforge(store, "base", "--distro", "minimal", "--release", "1")
        if built.returncode:
            raise SystemExit(built.stderr)
        yield store, net
    finally:
        lxcforge(store, "destroy", "--all", "--missing-ok")
        lxcforge(store, "network", "rm", net)
        lxcforge(store, "store", "detach")
        (work / "store.img").unlink(missing_ok=True)
        subprocess.run(["rm", "-rf", "--one-file-system", str(work)])
