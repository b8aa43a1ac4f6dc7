from pathlib import Path

import pytest

from lxcforge import config
from lxcforge.errors import LxcforgeError


def test_precedence_flags_over_env_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "config.toml"
    conf.write_text('store = "/from/file"\nnetwork = "filenet"\nuri = "lxc:///file"\n')
    monkeypatch.setenv("LXCFORGE_NETWORK", "envnet")
    monkeypatch.setenv("LXCFORGE_URI", "lxc:///env")
    settings = config.load({"uri": "lxc:///flag", "store": None}, config_file=conf)
    assert settings.store == Path("/from/file")
    assert settings.network == "envnet"
    assert settings.uri == "lxc:///flag"


def test_pool_image_defaults_beside_the_store(tmp_path: Path) -> None:
    settings = config.load({"store": tmp_path / "s"}, config_file=tmp_path / "none.toml")
    assert settings.pool_image_path == tmp_path / "s.img"


def test_unknown_setting_is_an_error_with_a_hint(tmp_path: Path) -> None:
    conf = tmp_path / "config.toml"
    conf.write_text('stroe = "/typo"\n')
    with pytest.raises(LxcforgeError) as info:
        config.load(config_file=conf)
    assert "stroe" in str(info.value) and info.value.hint
