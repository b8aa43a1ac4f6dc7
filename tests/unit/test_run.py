import pytest

from lxcforge.errors import CommandFailed, HostNotReady
from lxcforge.run import run


def test_output_and_locale() -> None:
    result = run(["sh", "-c", "echo $LC_ALL; echo oops >&2"])
    assert result.stdout == "C.UTF-8\n" and result.stderr == "oops\n" and result.returncode == 0


def test_failure_carries_the_stderr_tail() -> None:
    with pytest.raises(CommandFailed) as info:
        run(["sh", "-c", "echo first >&2; echo 'the real reason' >&2; exit 3"], hint="do this")
    assert info.value.returncode == 3
    assert "the real reason" in str(info.value) and info.value.hint == "do this"


def test_missing_program_is_host_not_ready() -> None:
    with pytest.raises(HostNotReady):
        run(["lxcforge-no-such-program"])


def test_stdin_is_empty_unless_given_and_lines_stream() -> None:
    assert run(["cat"]).stdout == ""
    seen: list[str] = []
    result = run(["sh", "-c", "cat; echo two"], input="one\n", on_line=seen.append)
    assert seen == ["one", "two"] and result.stdout == "one\ntwo\n"
