import pytest

from lxcforge.errors import InvalidName
from lxcforge.names import validate_base_name, validate_container_name, validate_network_name


@pytest.mark.parametrize("name", ["web1", "a", "web-1", "x" * 63, "0abc"])
def test_valid_container_names(name: str) -> None:
    assert validate_container_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "-web", "web-", "Web1", "web_1", "web.1", "../etc", "a/b", "x" * 64, "web 1", "wéb", ".", ".."],
)
def test_invalid_container_names(name: str) -> None:
    with pytest.raises(InvalidName) as info:
        validate_container_name(name)
    assert info.value.hint


def test_base_names_allow_versions_but_no_path_tricks() -> None:
    assert validate_base_name("ubuntu-24.04") == "ubuntu-24.04"
    for bad in ("..", "a..b", "../x", "a/b", ".hidden", "x."):
        with pytest.raises(InvalidName):
            validate_base_name(bad)


def test_network_names_fit_a_bridge_name() -> None:
    assert validate_network_name("lab") == "lab"
    with pytest.raises(InvalidName):
        validate_network_name("a" * 16)
