import random
from pathlib import Path

import pytest

from lxcforge import plot, timeline
from lxcforge.errors import HostNotReady
from lxcforge.timeline import ContainerRun, HostFacts, Run, Step

HOST = HostFacts("Intel(R) Xeon(R) Processor", 2, 0.2, 0.9, 1.7, 23 * 1024**3, 24 * 1024**3)
NEW_STEPS = (("snapshot", 0.012), ("fixups", 0.008), ("define", 0.030), ("start", 0.400))


def synthetic_run(count: int, *, seed: int = 1, jobs: int = 8, action: str = "new", failures: int = 0,
                  slower: float = 1.0, label: str | None = None, started: float = 1_700_000_000.0) -> Run:
    """A run shaped like `lxcforge new`'s: jobs workers snapshot, fix up, define and start each
    container, then its lease arrives ~2 s later while the worker takes the next one; the
    last `failures` containers get no lease. Other actions: one step named after the action."""
    rng = random.Random(seed)
    free = [started] * jobs  # when each worker is next free
    containers = []
    for i in range(count):
        worker = min(range(jobs), key=free.__getitem__)
        t = begin = free[worker]
        steps = []
        for name, typical in NEW_STEPS if action == "new" else ((action, 0.3),):
            spent = typical * slower * rng.lognormvariate(0, 0.3)
            steps.append(Step(name, t, t + spent))
            t += spent
        free[worker] = t + rng.uniform(0, 0.002)  # the next container's gap
        ok = i < count - failures
        if action == "new" and ok:
            lease = t + 2.1 * slower * rng.lognormvariate(0, 0.25)
            steps += [Step("lease", t, lease), Step("managed", lease + 0.001, lease + 0.006)]
            t = lease + 0.006
        elif action == "new":
            t += 30.0  # the lease timeout
        containers.append(ContainerRun(f"web{i + 1}", ok, None if ok else "no lease within 30 s", begin, t,
                                       tuple(steps)))
    ended = max(c.end for c in containers) + 0.05
    return Run(action, started, ended, HOST, HOST, tuple(containers), ("lxcforge", action, "--count", str(count)),
               label)


def test_png(tmp_path: Path) -> None:
    out = tmp_path / "run.png"
    plot.render([synthetic_run(20, failures=2)], out)
    assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert not list(tmp_path.glob(".*partial"))


def test_svg_names_the_containers_when_few(tmp_path: Path) -> None:
    out = tmp_path / "run.svg"
    plot.render([synthetic_run(12, action="destroy")], out)
    text = out.read_text()
    assert "<svg" in text
    assert "web12" in text and "destroy: 12 of 12 done" in text


def test_html_has_the_picture_and_each_runs_figures(tmp_path: Path) -> None:
    runs = [synthetic_run(30, label="before", failures=1), synthetic_run(30, seed=2, slower=0.7, label="after")]
    out = tmp_path / "compare.html"
    plot.render(runs, out)
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "<?xml" not in page
    for run in runs:
        figures = timeline.summary(run)
        assert f"<td>{run.label}</td>" in page
        assert f"<td>{figures['succeeded']}</td>" in page
        assert f"<td>{figures['seconds']:.1f}</td>" in page
        assert f"{figures['phase_p50_ms']['lease']:.0f} ms" in page
    assert "web30: no lease within 30 s" in page


def test_many_runs_and_many_containers(tmp_path: Path) -> None:
    runs = [synthetic_run(200, seed=s, failures=s) for s in range(5)]
    out = tmp_path / "five.svg"
    plot.render(runs, out)
    text = out.read_text()
    assert "timelines of the first 3 only" in text
    assert "web150" not in text  # rows numbered, not named


def test_labels_fall_back_to_action_and_time_and_stay_distinct() -> None:
    a, b = synthetic_run(2), synthetic_run(2, seed=2)
    labels = plot.run_labels([a, b, synthetic_run(2, label="x")])
    assert labels[0].startswith("new 2023-11-") and labels[0].endswith(" #1") and labels[1].endswith(" #2")
    assert labels[2] == "x"


def test_a_run_without_containers_draws(tmp_path: Path) -> None:
    out = tmp_path / "empty.png"
    plot.render([Run("new", 10.0, 11.0, HOST, HOST, ())], out)
    assert out.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("name", ["run.pdf", "run", "run.jsonl"])
def test_unknown_extension_refused_before_drawing(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match=r"\.png, \.svg, \.html"):
        plot.render([synthetic_run(3)], tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_missing_matplotlib_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    with pytest.raises(HostNotReady) as caught:
        plot.render([synthetic_run(3)], tmp_path / "run.png")
    assert caught.value.hint == "pip install 'lxcforge[report]'"
    assert list(tmp_path.iterdir()) == []
