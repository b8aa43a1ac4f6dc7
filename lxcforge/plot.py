"""Pictures of bulk commands' timings (timeline.Run): a bootchart of the fleet (a row per
container, its steps as bars), containers ready over time, and how long each took to be ready.
Two or more runs are overlaid, for comparison. PNG, SVG, or an HTML page (the SVG and a table
of each run's figures).

matplotlib is an extra (lxcforge[report]), imported only here and only when drawing."""

from __future__ import annotations

import html
import io
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lxcforge import timeline
from lxcforge.errors import HostNotReady
from lxcforge.timeline import Run

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FORMATS = (".png", ".svg", ".html")
MAX_TIMELINES = 3  # more runs are overlaid in the lower panels, but not each drawn as a bootchart
MAX_LABELLED_ROWS = 60  # above this, names would overlap: rows are numbered instead
WIDTH = 11.0  # inches
DPI = 100
FAILED = "#d62728"
GAP = "#c8c8c8"
# Step colours, in the order steps are first met (new: snapshot, fixups, define, start, lease,
# managed); red is kept for failures, grey for time between steps.
STEP_COLOURS = ("#1f77b4", "#ff7f0e", "#9467bd", "#2ca02c", "#17becf", "#8c564b", "#e377c2", "#bcbd22")
RUN_COLOURS = ("#222222", "#d95f02", "#1b9e77", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d")


def render(runs: Sequence[Run], out: Path) -> None:
    """Draw runs to out: .png, .svg or .html (by its extension), written whole or not at all."""
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{out}: cannot draw to {suffix or 'no extension'!r}; use one of {', '.join(FORMATS)}")
    if not runs:
        raise ValueError("no runs to draw")
    try:
        import matplotlib  # noqa: F401  (only to say what is missing)
    except ImportError:
        raise HostNotReady("drawing timings needs matplotlib, which is not installed",
                           hint="pip install 'lxcforge[report]'") from None
    labels = run_labels(runs)
    figure = _figure(runs, labels)
    if suffix == ".png":
        timeline.write_whole(out, _save(figure, "png"))
    else:
        svg = _save(figure, "svg").decode()
        timeline.write_whole(out, (svg if suffix == ".svg" else _page(runs, labels, svg)).encode())


def run_labels(runs: Sequence[Run]) -> list[str]:
    """Each run's label, else its action and start time; repeats numbered so the legend can tell them apart."""
    labels = [r.label or f"{r.action} {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(r.started))}"
              for r in runs]
    return [f"{label} #{labels[:i].count(label) + 1}" if labels.count(label) > 1 else label
            for i, label in enumerate(labels)]


def _save(figure: Figure, fmt: str) -> bytes:
    from matplotlib import rc_context

    buffer = io.BytesIO()
    # SVG: text stays text (smaller, searchable), ids and date fixed (the same run draws the same file).
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "lxcforge"}):
        figure.savefig(buffer, format=fmt, dpi=DPI, metadata={"Date": None} if fmt == "svg" else None)
    return buffer.getvalue()


def _figure(runs: Sequence[Run], labels: Sequence[str]) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    shown = runs[:MAX_TIMELINES]
    plans = [_rows_plan(len(r.containers), len(shown)) for r in shown]
    lower = 2.6  # inches for each of the two lower panels
    heights = [height for height, _ in plans] + [lower, lower]
    header = 1.3  # title lines and the steps' legend
    figure = Figure(figsize=(WIDTH, sum(heights) + header), layout="constrained")
    FigureCanvasAgg(figure)  # Agg, whatever backend pyplot would pick: no display needed
    grid = figure.add_gridspec(len(heights), 1, height_ratios=heights)
    colours = _step_colours(runs)
    span = max(max([r.ended, *(c.end for c in r.containers)]) - r.started for r in runs) or 1.0

    same_host = len({(r.host_start.cpu_model, r.host_start.cores) for r in runs}) == 1
    same_action = len({r.action for r in runs}) == 1
    axes: list[Axes] = []
    marks = {"failed": False, "gaps": False}
    for i, (run, (_, labelled)) in enumerate(zip(shown, plans, strict=True)):
        ax = figure.add_subplot(grid[i], sharex=axes[0] if axes else None)
        axes.append(ax)
        for mark, drawn in _draw_timeline(ax, run, colours, labelled, span).items():
            marks[mark] |= drawn
        if len(runs) > 1:
            title = f"{labels[i]}: {'' if same_action else run.action + ', '}{_outcome(run, _word(runs))}"
            ax.set_title(title if same_host else f"{title}, on {_host(run)}", loc="left", fontsize=10)
    first = axes[0]
    ready = figure.add_subplot(grid[len(shown)], sharex=first)
    _draw_ready(ready, runs, labels)
    ready.set_xlim(0, span * 1.01)
    _draw_durations(figure.add_subplot(grid[len(shown) + 1]), runs, labels)

    handles: list[Any] = [Patch(color=c, label=name) for name, c in colours.items()]
    if marks["gaps"]:
        handles.append(Patch(color=GAP, label="between steps"))
    if marks["failed"]:
        handles.append(Line2D([], [], marker="x", color=FAILED, linestyle="none", label="failed (at its end)"))
    # Above the first bootchart, outside it: the steps' colours, covering no bar.
    if handles:
        first.legend(handles=handles, loc="lower left", bbox_to_anchor=(0, 1.0 if len(runs) == 1 else 1.08),
                     ncol=len(handles), frameon=False, fontsize=9, handlelength=1.5, borderaxespad=0.2)
    figure.suptitle(_title(runs, same_host), fontsize=11)
    return figure


def _rows_plan(rows: int, panels: int) -> tuple[float, bool]:
    """A timeline panel's height in inches, and whether its rows are named (else numbered)."""
    per_row, axis = 0.14, 0.9  # 7-point names need about 0.14 inch each
    budget = 10.0 if panels == 1 else 4.0
    if rows <= MAX_LABELLED_ROWS and per_row * rows + axis <= budget:
        return max(1.8, per_row * rows + axis), True
    return (5.0 if panels == 1 else 3.2), False


def _step_colours(runs: Sequence[Run]) -> dict[str, str]:
    names = dict.fromkeys(s.name for r in runs for c in r.containers for s in c.steps)
    return {name: STEP_COLOURS[i % len(STEP_COLOURS)] for i, name in enumerate(names)}


def _word(runs: Sequence[Run]) -> str:
    return "ready" if all(r.action == "new" for r in runs) else "done"


def _outcome(run: Run, word: str) -> str:
    ok = sum(1 for c in run.containers if c.ok)
    return f"{ok} of {len(run.containers)} {word} in {run.ended - run.started:.1f} s"


def _host(run: Run) -> str:
    return f"{run.host_start.cpu_model}, {run.host_start.cores} cores"


def _title(runs: Sequence[Run], same_host: bool) -> str:
    if len(runs) == 1:
        run = runs[0]
        start, end = run.host_start, run.host_end
        gib = 1024**3
        host = f"{_host(run)}; load {start.load1:.2f} \u2192 {end.load1:.2f}"
        if start.mem_total_bytes:
            host += (f"; memory available {start.mem_available_bytes / gib:.1f} \u2192 "
                     f"{end.mem_available_bytes / gib:.1f} GiB of {start.mem_total_bytes / gib:.1f}")
        lines = [f"{run.action}: {_outcome(run, _word(runs))}", host]
        if run.command:
            command = " ".join(run.command)
            lines.append(command if len(command) <= 110 else command[:107] + "...")
        return "\n".join(lines)
    actions = ", ".join(dict.fromkeys(r.action for r in runs))
    line = f"{actions}: {len(runs)} runs compared"
    if len(runs) > MAX_TIMELINES:
        line += f" (timelines of the first {MAX_TIMELINES} only)"
    return line + (f"\non {_host(runs[0])}" if same_host else "\non different hosts")


def _bars(ax: Axes, rows: Any, starts: Any, ends: Any, height: float, colour: str) -> None:
    """Many horizontal bars as one collection: 6000 bars draw in a fraction of a second."""
    import numpy as np
    from matplotlib.collections import PolyCollection

    if len(rows) == 0:
        return
    top, bottom = rows - height / 2, rows + height / 2
    # An (n, 4, 2) array: PolyCollection's fast path (its type stubs ask for a Sequence).
    corners = ((starts, top), (ends, top), (ends, bottom), (starts, bottom))
    verts: Any = np.stack([np.column_stack(corner) for corner in corners], axis=1)
    ax.add_collection(PolyCollection(verts, facecolors=colour, edgecolors="none", linewidths=0))


def _draw_timeline(ax: Axes, run: Run, colours: dict[str, str], labelled: bool, span: float) -> dict[str, bool]:
    """One row per container, in order of start (first at the top; ties in the run's order).
    Says which marks it drew that the legend has to explain: failures, gaps between steps."""
    import numpy as np

    containers = sorted(run.containers, key=lambda c: c.start)
    t0 = run.started
    row_of = {id(c): i for i, c in enumerate(containers, 1)}
    rows = np.arange(1, len(containers) + 1, dtype=float)
    height = 0.8 if labelled else 1.0
    # The whole container, thin, under its steps: the gaps between steps show as grey.
    _bars(ax, rows, np.array([c.start - t0 for c in containers]), np.array([c.end - t0 for c in containers]),
          height * 0.35, GAP)
    for name, colour in colours.items():
        steps = [(row_of[id(c)], s.start - t0, s.end - t0) for c in containers for s in c.steps if s.name == name]
        if steps:
            where = np.array(steps, dtype=float)
            _bars(ax, where[:, 0], where[:, 1], where[:, 2], height, colour)
    failed = [(c.end - t0, row_of[id(c)]) for c in containers if not c.ok]
    if failed:
        x, y = zip(*failed, strict=True)
        ax.scatter(x, y, marker="x", color=FAILED, s=30 if labelled else 12, linewidths=1.2, zorder=3)
    ax.set_ylim(max(len(containers), 1) + 0.5, 0.5)
    if labelled:
        ax.set_yticks(rows, [c.name for c in containers], fontsize=7)
        ax.tick_params(axis="y", length=0)
        for tick, c in zip(ax.get_yticklabels(), containers, strict=True):
            if not c.ok:
                tick.set_color(FAILED)
    else:
        from matplotlib.ticker import MaxNLocator

        ax.yaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
        ax.set_ylabel("containers, by start")
    ax.grid(axis="x", color="#e6e6e6", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.tick_params(axis="x", labelbottom=True)
    visible = span / 1000  # a gap narrower than this is not a pixel wide
    gaps = any(c.end - c.start - sum(timeline.step_seconds(c).values()) > visible for c in containers)
    return {"failed": bool(failed), "gaps": gaps}


def _draw_ready(ax: Axes, runs: Sequence[Run], labels: Sequence[str]) -> None:
    word = _word(runs)
    for i, (run, label) in enumerate(zip(runs, labels, strict=True)):
        times = timeline.ready_times(run)
        colour = RUN_COLOURS[i % len(RUN_COLOURS)]
        x = [0.0, *times, max(run.ended - run.started, times[-1] if times else 0.0)]
        y = [0, *range(1, len(times) + 1), len(times)]
        name = f"{label}: " if len(runs) > 1 else ""
        ax.step(x, y, where="post", color=colour, linewidth=1.6,
                label=f"{name}{len(times)} of {len(run.containers)} {word} in {run.ended - run.started:.1f} s")
    ax.set_ylim(0, max(len(r.containers) for r in runs) * 1.04 or 1)
    ax.set_xlabel("seconds since the run's start")
    ax.set_ylabel(f"containers {word}")
    ax.grid(color="#e6e6e6", linewidth=0.6)
    ax.legend(loc="lower right", fontsize=9)


def _draw_durations(ax: Axes, runs: Sequence[Run], labels: Sequence[str]) -> None:
    """Each succeeded container's time from its start to ready, as a cumulative distribution:
    runs overlay cleanly, and p50 and p95 are read off the dotted lines."""
    from matplotlib.transforms import blended_transform_factory

    beside = blended_transform_factory(ax.transAxes, ax.transData)
    for q in (50, 95):
        ax.axhline(q, color="#999999", linewidth=0.8, linestyle=":")
        ax.text(1.005, q, f"p{q}", transform=beside, va="center", fontsize=8, color="#666666")
    drawn = False
    for i, (run, label) in enumerate(zip(runs, labels, strict=True)):
        durations = sorted(c.end - c.start for c in run.containers if c.ok)
        if not durations:
            continue
        drawn = True
        share = [100 * k / len(durations) for k in range(1, len(durations) + 1)]
        figures = timeline.summary(run)
        name = f"{label}: " if len(runs) > 1 else ""
        ax.step([0.0, *durations], [0.0, *share], where="post", color=RUN_COLOURS[i % len(RUN_COLOURS)],
                linewidth=1.6, label=f"{name}p50 {timeline.duration_text(figures['p50_seconds'])}, "
                                     f"p95 {timeline.duration_text(figures['p95_seconds'])}")
    ax.set_xlim(left=0)
    ax.set_ylim(0, 102)
    ax.set_yticks([0, 25, 50, 75, 100])
    ax.set_xlabel(f"seconds from a container's start to {_word(runs)}")
    ax.set_ylabel(f"% of containers {_word(runs)}")
    ax.grid(axis="x", color="#e6e6e6", linewidth=0.6)
    if drawn:
        ax.legend(loc="lower right", fontsize=9)


def _page(runs: Sequence[Run], labels: Sequence[str], svg: str) -> str:
    """A self-contained HTML page: a row of figures per run, the failures, then the picture."""
    steps = list(dict.fromkeys(name for r in runs for name in timeline.summary(r)["phase_p50_ms"]))
    head = ["run", "action", "started", "containers", "succeeded", "seconds", "per second", "p50", "p95",
            *(f"{s} p50" for s in steps), "host", "load (start \u2192 end)"]
    body = []
    failures = []
    for run, label in zip(runs, labels, strict=True):
        f = timeline.summary(run)
        cells = [label, run.action, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.started)),
                 str(f["total"]), str(f["succeeded"]), f"{f['seconds']:.1f}", f"{f['per_second']:.1f}",
                 _maybe(f["p50_seconds"]), _maybe(f["p95_seconds"]),
                 *(f"{f['phase_p50_ms'][s]:.0f} ms" if s in f["phase_p50_ms"] else "" for s in steps),
                 _host(run), f"{run.host_start.load1:.2f} \u2192 {run.host_end.load1:.2f}"]
        body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
        failures += [f"<li>{html.escape(label)}: {html.escape(item['name'])}: {html.escape(item['error'] or '')}</li>"
                     for item in f["failed"][:20]]
        if len(f["failed"]) > 20:
            failures.append(f"<li>{html.escape(label)}: and {len(f['failed']) - 20} more</li>")
    title = html.escape(", ".join(dict.fromkeys(r.action for r in runs)) + " timings: " + ", ".join(labels))
    failed = f"<h2>Failed</h2>\n<ul>\n{''.join(failures)}\n</ul>\n" if failures else ""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>lxcforge: {title}</title>\n"
        "<style>body{font-family:sans-serif;margin:1.5em;color:#222} svg{max-width:100%;height:auto}"
        " table{border-collapse:collapse;font-size:14px;margin:1em 0}"
        " th,td{padding:.3em .7em;border-bottom:1px solid #ddd;text-align:right;white-space:nowrap}"
        " th:first-child,td:first-child{text-align:left}</style>\n</head>\n<body>\n"
        f"<h1>lxcforge: {title}</h1>\n<table>\n"
        "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>\n" + "\n".join(body) + "\n</table>\n"
        f"{failed}<figure>\n{svg[svg.index('<svg'):]}</figure>\n</body>\n</html>\n"
    )


def _maybe(seconds: float | None) -> str:
    return "" if seconds is None else timeline.duration_text(seconds)
