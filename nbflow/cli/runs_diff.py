"""``nbflow runs diff A B [--json]``: what differs between two flow runs.

The comparison is :func:`nbflow.orchestration.diff.diff_runs` (the server's
``GET /flow_runs/{a}/diff?other={b}`` answers the same JSON).  It reads through the
configured client, so it works on the embedded store and through a server alike; output
notebooks are fetched as ``nbflow runs output`` does.  Text output shows what changed:
parameters, states, durations, task runs, then each changed cell -- its text outputs as a
unified diff, a changed table with both versions, a changed image with both sizes.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from nbflow.cli._output import format_duration, print_table
from nbflow.cli.runs import read_output_notebook, resolve_flow_run
from nbflow.client import Client, get_client
from nbflow.orchestration.diff import (
    CellDiff,
    ImageInfo,
    RunDiff,
    RunSide,
    diff_runs,
    load_run,
)

__all__ = ["diff_two_runs", "handle_diff", "register"]


def register(group: Any) -> None:
    """Add ``runs diff`` to the ``runs`` subcommands."""
    diff = group.add_parser(
        "diff",
        help="compare two flow runs: parameters, states, task durations, cell outputs",
        description="Compare flow run A with flow run B: parameters (added, removed, "
        "changed), states and durations, task runs (state and duration delta), and the "
        "cell outputs of their output notebooks (text as a unified diff, changed tables "
        "and images). Deltas are B - A.",
    )
    diff.add_argument("a", metavar="A", help="a flow run id, or a unique prefix of one")
    diff.add_argument("b", metavar="B", help="the flow run to compare it with")
    diff.add_argument(
        "--json", action="store_true", help="print the comparison as JSON (see docs/cli.md)"
    )
    diff.set_defaults(handler=handle_diff, prog=diff.prog)


def diff_two_runs(client: Client, a: str, b: str) -> RunDiff:
    """Compare the runs named by ``a`` and ``b`` (ids or unique prefixes)."""
    records = []
    for text in (a, b):
        run = resolve_flow_run(client, text)
        records.append(load_run(client, run.id, lambda r: read_output_notebook(client, r)))
    return diff_runs(records[0], records[1])


def handle_diff(args: argparse.Namespace) -> int:
    """Print the comparison of two runs."""
    diff = diff_two_runs(get_client(), args.a, args.b)
    if args.json:
        sys.stdout.write(diff.model_dump_json(indent=2) + "\n")
        return 0
    _print_diff(diff)
    return 0


# -- text ---------------------------------------------------------------------------------


def _side_line(label: str, side: RunSide) -> str:
    return (
        f"{label}  {side.id}  {side.name}  {side.flow_name or '-'}  {side.state or '-'}  "
        f"{format_duration(side.duration)}"
    )


def _signed(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return ("+" if seconds >= 0 else "-") + format_duration(abs(seconds))


def _image(info: ImageInfo | None) -> str:
    if info is None:
        return "(none)"
    size = f"{info.width}x{info.height} px, " if info.width is not None else ""
    return f"{info.mime} {size}{info.bytes} bytes, sha256 {info.sha256[:12]}"


def _indented(text: str | None, prefix: str = "      ") -> list[str]:
    if text is None:
        return [f"{prefix}(none)"]
    return [prefix + line for line in text.splitlines()] or [prefix]


def _cell_lines(cell: CellDiff) -> list[str]:
    where = f"{cell.index_a if cell.index_a is not None else '—'} → " + (
        f"{cell.index_b if cell.index_b is not None else '—'}"
    )
    if cell.status in ("added", "removed"):
        return [f"  cell {where}: {cell.label} ({cell.status})"]
    what = "source and output changed" if cell.source_changed else "output changed"
    if cell.source_changed and not (cell.text_diff or cell.tables or cell.images):
        what = "source changed"
    lines = [f"  cell {where}: {cell.label} ({what})"]
    lines += [f"    {line}" for line in cell.text_diff]
    for table in cell.tables:
        lines.append(f"    {table.kind} changed")
        lines.append("    A:")
        lines += _indented(table.a_text if table.a_text is not None else table.a)
        lines.append("    B:")
        lines += _indented(table.b_text if table.b_text is not None else table.b)
    for image in cell.images:
        lines.append(f"    image changed: A {_image(image.a)}")
        lines.append(f"                   B {_image(image.b)}")
    return lines


def _print_diff(diff: RunDiff) -> None:
    print(_side_line("A", diff.a))
    print(_side_line("B", diff.b))
    print(f"\nState     {diff.state.a or '-'} → {diff.state.b or '-'}", end="")
    print("" if diff.state.changed else "  (same)")
    print(
        f"Duration  {format_duration(diff.duration.a)} → {format_duration(diff.duration.b)}"
        f"  ({_signed(diff.duration.delta)})"
    )

    print("\nParameters")
    p = diff.parameters
    rows = [(f"  {k}", f"{v['a']!r} → {v['b']!r}") for k, v in p.changed.items()]
    rows += [(f"+ {k}", f"{v!r} (only in B)") for k, v in p.added.items()]
    rows += [(f"- {k}", f"{v!r} (only in A)") for k, v in p.removed.items()]
    width = max((len(name) for name, _ in rows), default=0)
    for name, change in rows:
        print(f"  {name.ljust(width)}  {change}")
    if p.same:
        print(f"  same: {', '.join(p.same)}")
    if not rows and not p.same:
        print("  (none)")

    print(f"\nTask runs ({len(diff.task_runs)})")
    if diff.task_runs:
        print_table(
            ["  TASK", "A", "B", "A TIME", "B TIME", "DELTA"],
            [
                [
                    f"  {t.key if t.key != f'{t.name}-0' else t.name}",
                    (t.a.state or "-") if t.a else "(not run)",
                    (t.b.state or "-") if t.b else "(not run)",
                    format_duration(t.a.duration if t.a else None),
                    format_duration(t.b.duration if t.b else None),
                    _signed(t.delta),
                ]
                for t in diff.task_runs
            ],
        )
    else:
        print("  (none)")

    print("\nCells")
    if not diff.outputs_available:
        print(f"  {diff.outputs_note}")
        return
    same = 0
    for cell in diff.cells:
        if cell.status == "same":
            same += 1
            continue
        print("\n".join(_cell_lines(cell)))
    print(f"  {same} cell(s) unchanged")
