"""Render a benchmark results JSON file as a PNG chart.

One panel per primitive group (locks, counters, state, queues) and backend: throughput
(median operations per second, log scale) by worker count, one line per implementation, with
the min-max spread as error bars. Threads are solid lines, processes are single markers
(``P``) at their worker count, joined by a dotted line when there are several (``run.py
--curves``). unidist's lines are drawn thick; ``(limit)`` rows dashed.

    .venv-bench/bin/python benchmarks/chart.py benchmarks/results/latest.json [-o out.png]

``benchmarks/run.py`` calls :func:`render` itself after every run (``latest.png``, and
``<date>-<N>core.png`` with ``--save``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

GROUP_ORDER = ("locks", "counters", "state", "queues")
BACKEND_ORDER = ("memory", "file", "redis", "redis-aof", "redis-aof-always")


def _panels(rows: list[dict[str, Any]]) -> list[tuple[str, str, list[dict[str, Any]]]]:
    by: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row.get("error") or not row.get("median"):
            continue
        by[(row["group"], row["backend"])].append(row)

    def rank(key: tuple[str, str]) -> tuple[int, int, str]:
        g, b = key
        gi = GROUP_ORDER.index(g) if g in GROUP_ORDER else len(GROUP_ORDER)
        bi = BACKEND_ORDER.index(b) if b in BACKEND_ORDER else len(BACKEND_ORDER)
        return gi, bi, b

    return [(g, b, by[(g, b)]) for g, b in sorted(by, key=rank)]


def render(results: dict[str, Any], out: Path) -> Path:
    """Draw ``results`` (the JSON ``benchmarks/run.py`` writes) into the PNG file ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = _panels(results["rows"])
    if not panels:
        raise ValueError("no successful rows to draw")
    cols = 3
    nrows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(6.2 * cols, 4.4 * nrows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    for ax, (group, backend, rows) in zip(axes.flat, panels):
        lines: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            lines[row["label"]].append(row)
        for label, items in sorted(
            lines.items(), key=lambda kv: (kv[1][0]["role"] != "unidist", kv[0])
        ):
            role = items[0]["role"]
            style = {
                "linewidth": 2.6 if role == "unidist" else 1.2,
                "linestyle": "--" if role == "limit" else "-",
                "alpha": 1.0 if role == "unidist" else 0.8,
            }
            threads = sorted(
                (r for r in items if r["kind"] == "thread"), key=lambda r: r["workers"]
            )
            procs = sorted((r for r in items if r["kind"] != "thread"), key=lambda r: r["workers"])
            color = None
            if threads:
                xs = [r["workers"] for r in threads]
                ys = [r["median"] for r in threads]
                err = [
                    [r["median"] - r["min"] for r in threads],
                    [r["max"] - r["median"] for r in threads],
                ]
                (line,) = ax.plot(xs, ys, marker="o", label=label, **style)
                color = line.get_color()
                ax.errorbar(xs, ys, yerr=err, fmt="none", ecolor=color, alpha=0.5, capsize=2)
            if procs:
                ax.plot(
                    [r["workers"] for r in procs],
                    [r["median"] for r in procs],
                    marker="P",
                    markersize=9,
                    # a curve (several process counts) is joined by a dotted line
                    linestyle=":" if len(procs) > 1 else "none",
                    color=color,
                    label=None if threads else f"{label} (processes)",
                )
        ax.set_yscale("log")
        ax.set_title(f"{group} - {backend}", fontsize=11)
        ax.set_xlabel("workers (lines: threads, P: processes)")
        ax.set_ylabel("ops/s (median, log)")
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=7, loc="best")
        xs_all = sorted({r["workers"] for r in rows})
        ax.set_xticks(xs_all)
    machine = results.get("machine", {})
    fig.suptitle(
        f"unidist vs peers - {machine.get('cpu_count', '?')} CPUs, {machine.get('kernel', '')}, "
        f"Python {machine.get('python', '')}, commit {str(machine.get('git_commit', ''))[:10]}",
        fontsize=12,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="a results JSON written by benchmarks/run.py")
    parser.add_argument("-o", "--out", default=None, help="PNG path (default: beside the JSON)")
    args = parser.parse_args(argv)
    src = Path(args.results)
    out = Path(args.out) if args.out else src.with_suffix(".png")
    render(json.loads(src.read_text(encoding="utf-8")), out)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
