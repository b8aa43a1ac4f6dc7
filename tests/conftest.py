"""Test layout: tests/unit run anywhere; tests/integration need root, libvirtd and btrfs.

Under the README's test command (LXCFORGE_REQUIRE_INTEGRATION=1, set by scripts/test and
so in CI) a missing prerequisite fails the integration tests; elsewhere they skip with the
reason."""

from __future__ import annotations

import os
import secrets

import pytest

REQUIRE = os.environ.get("LXCFORGE_REQUIRE_INTEGRATION") == "1"


def integration_prerequisites() -> str | None:
    """The reason integration tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "integration tests need root"
    from lxcforge.errors import LxcforgeError
    from lxcforge.run import which
    from lxcforge.virt import Virt

    for tool in ("mkfs.btrfs", "btrfs", "losetup"):
        if which(tool) is None:
            return f"{tool} is not installed (run vagrant/provision.sh)"
    try:
        Virt("lxc:///").close()
    except LxcforgeError as exc:
        return f"libvirtd is not reachable: {exc}"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    integration = [i for i in items if "integration" in str(i.path.parent)]
    for item in integration:
        item.add_marker(pytest.mark.integration)
    if not integration:
        return
    reason = integration_prerequisites()
    if reason is None:
        return
    for item in integration:
        if REQUIRE:
            item.add_marker(pytest.mark.usefixtures("_fail_missing_prerequisite"))
        else:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def _fail_missing_prerequisite() -> None:
    pytest.fail(f"integration prerequisite missing: {integration_prerequisites()}")


@pytest.fixture
def unique() -> str:
    """A short unique suffix for names of things a test creates."""
    return secrets.token_hex(3)
