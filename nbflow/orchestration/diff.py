"""Compare two flow runs: "why does today's report differ from yesterday's".

The one implementation behind ``nbflow runs diff A B`` and ``GET /flow_runs/{a}/diff?other=b``:
:func:`load_run` gathers what a run is made of (its effective parameters, task runs and
output notebook, through any reader: a client or the store), :func:`diff_runs` compares two
of them.  The result, :class:`RunDiff`, is the JSON both answer (stable; docs/cli.md):

- ``parameters``: added / removed / changed (the flow's defaults count as given);
- ``state`` and ``duration`` of the two flow runs, ``task_runs`` matched by task key and
  dynamic key (state, duration, delta ``b - a`` in seconds);
- ``cells``: the code cells of the two output notebooks, matched by cell id (else by
  source), each ``same``, ``changed``, ``added`` or ``removed``: text outputs (streams,
  plain results, errors as ``ename: evalue``) as a unified diff, HTML outputs (tables) that
  differ with both versions, images that differ with both sizes and hashes.  Widget outputs
  (nbflow's own run summary among them) and the injected parameters cell are not compared.

A run without an output notebook is still compared; ``outputs_note`` says why there are
no cells.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import hashlib
import json
import re
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from nbflow.exceptions import NbflowError
from nbflow.schemas import Flow, FlowRun, TaskRun, TaskRunFilter
from nbflow.states import StateType, now

__all__ = [
    "CellDiff",
    "DurationDiff",
    "HtmlChange",
    "ImageChange",
    "ImageInfo",
    "ParameterDiff",
    "RunDiff",
    "RunReader",
    "RunRecord",
    "RunSide",
    "StateDiff",
    "TaskRunDiff",
    "TaskRunSide",
    "diff_runs",
    "load_run",
    "run_duration",
]

_WIDGET = "application/vnd.jupyter.widget-view+json"
_IMAGES = ("image/png", "image/jpeg", "image/gif", "image/svg+xml")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_MAGIC = re.compile(r"^%%(?:task|flow)\s+([\w.-]+)")


class RunReader(Protocol):
    """What :func:`load_run` reads: any client, or the store itself."""

    def read_flow_run(self, flow_run_id: UUID) -> FlowRun: ...

    def read_flow(self, flow_id: UUID) -> Flow: ...

    def read_task_runs(self, task_run_filter: TaskRunFilter | None = None) -> list[TaskRun]: ...


@dataclass
class RunRecord:
    """One side of a comparison: a run with what it is made of."""

    run: FlowRun
    #: The run's parameters with the flow's defaults for those it did not set.
    parameters: dict[str, Any]
    task_runs: list[TaskRun] = field(default_factory=list)
    #: The output notebook (nbformat JSON), or None with ``notebook_problem`` saying why.
    notebook: dict[str, Any] | None = None
    notebook_problem: str | None = None


def run_duration(run: FlowRun) -> float | None:
    """Return how long the run ran (total run time; from the start until now when running)."""
    if run.total_run_time:
        return run.total_run_time
    if run.start_time and run.end_time:
        return (run.end_time - run.start_time).total_seconds()
    if run.start_time and run.state_type == StateType.RUNNING:
        return (now() - run.start_time).total_seconds()
    return None


def load_run(
    reader: RunReader,
    flow_run_id: UUID,
    read_notebook: Callable[[FlowRun], dict[str, Any]],
) -> RunRecord:
    """Gather a run for :func:`diff_runs` (``FlowRunNotFound`` for an unknown id).

    ``read_notebook`` returns the run's output notebook or raises ``NbflowError`` saying
    why it has none; that reason becomes the record's ``notebook_problem``.
    """
    run = reader.read_flow_run(flow_run_id)
    parameters = dict(run.parameters)
    try:
        schema = reader.read_flow(run.flow_id).parameters_schema
    except NbflowError:
        schema = {}
    for name, prop in (schema.get("properties") or {}).items():
        if name not in parameters and isinstance(prop, dict) and "default" in prop:
            parameters[name] = prop["default"]
    task_runs = reader.read_task_runs(TaskRunFilter(flow_run_ids=[run.id], limit=100_000))
    try:
        notebook: dict[str, Any] | None = read_notebook(run)
        problem = None
    except NbflowError as exc:
        notebook, problem = None, str(exc)
    return RunRecord(run, parameters, task_runs, notebook, problem)


# -- the result ---------------------------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunSide(_Out):
    """Who one side is."""

    id: UUID
    name: str
    flow_name: str | None
    state: str | None
    start_time: datetime | None = None
    end_time: datetime | None = None
    duration: float | None
    #: Whether the run's output notebook could be read (else ``output_problem`` says why).
    output: Literal["available", "unavailable"]
    output_problem: str | None = None


class ParameterDiff(_Out):
    """Parameters only in B (added), only in A (removed), or with other values (changed)."""

    added: dict[str, Any]
    removed: dict[str, Any]
    #: ``{name: {"a": value, "b": value}}``.
    changed: dict[str, dict[str, Any]]
    same: list[str]


class StateDiff(_Out):
    """The final states (names) of the two runs."""

    a: str | None
    b: str | None
    changed: bool


class DurationDiff(_Out):
    """Durations in seconds; ``delta`` is ``b - a``."""

    a: float | None
    b: float | None
    delta: float | None


class TaskRunSide(_Out):
    """A task run on one side."""

    state: str | None
    duration: float | None
    run_count: int


class TaskRunDiff(_Out):
    """One task (key and dynamic key) in both runs; a side is None where it did not run."""

    key: str
    name: str
    a: TaskRunSide | None
    b: TaskRunSide | None
    state_changed: bool
    delta: float | None


class HtmlChange(_Out):
    """An HTML output (a table when it holds one) that differs, with both versions."""

    kind: Literal["table", "html"]
    a: str | None
    b: str | None
    #: The outputs' ``text/plain`` renderings, for a terminal.
    a_text: str | None
    b_text: str | None


class ImageInfo(_Out):
    """An image output, described by size and hash (the panel shows the images)."""

    mime: str
    bytes: int
    sha256: str
    width: int | None = None
    height: int | None = None


class ImageChange(_Out):
    """An image that differs (or exists on one side only)."""

    a: ImageInfo | None
    b: ImageInfo | None


class CellDiff(_Out):
    """One code cell of the output notebooks, matched across the two runs."""

    index_a: int | None
    index_b: int | None
    cell_id: str | None
    #: The task or flow name of the cell, else its first line.
    label: str
    status: Literal["same", "changed", "added", "removed"]
    source_changed: bool
    #: Unified diff (``difflib``) of the text outputs, lines without newlines; empty if same.
    text_diff: list[str]
    tables: list[HtmlChange]
    images: list[ImageChange]


class RunDiff(_Out):
    """Run A compared with run B."""

    a: RunSide
    b: RunSide
    parameters: ParameterDiff
    state: StateDiff
    duration: DurationDiff
    task_runs: list[TaskRunDiff]
    #: False when either output notebook is missing: ``cells`` is then empty.
    outputs_available: bool
    outputs_note: str | None
    cells: list[CellDiff]


# -- comparing ----------------------------------------------------------------------------


def diff_runs(a: RunRecord, b: RunRecord) -> RunDiff:
    """Compare run ``a`` with run ``b`` (``b`` is "the new one": deltas are ``b - a``)."""
    da, db = run_duration(a.run), run_duration(b.run)
    state_a = a.run.state.name if a.run.state else None
    state_b = b.run.state.name if b.run.state else None
    cells: list[CellDiff] = []
    note = None
    if a.notebook is not None and b.notebook is not None:
        cells = _diff_cells(a.notebook, b.notebook)
    else:
        missing = [r for r in (a, b) if r.notebook is None]
        note = "; ".join(r.notebook_problem or f"flow run {r.run.id} has none" for r in missing)
        note = f"cell outputs unavailable: {note}"
    return RunDiff(
        a=_side(a, da),
        b=_side(b, db),
        parameters=_diff_parameters(a.parameters, b.parameters),
        state=StateDiff(a=state_a, b=state_b, changed=state_a != state_b),
        duration=DurationDiff(a=da, b=db, delta=_delta(da, db)),
        task_runs=_diff_task_runs(a.task_runs, b.task_runs),
        outputs_available=note is None,
        outputs_note=note,
        cells=cells,
    )


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def _side(record: RunRecord, duration: float | None) -> RunSide:
    run = record.run
    return RunSide(
        id=run.id,
        name=run.name,
        flow_name=run.flow_name,
        state=run.state.name if run.state else None,
        start_time=run.start_time,
        end_time=run.end_time,
        duration=duration,
        output="available" if record.notebook is not None else "unavailable",
        output_problem=record.notebook_problem if record.notebook is None else None,
    )


def _diff_parameters(a: dict[str, Any], b: dict[str, Any]) -> ParameterDiff:
    return ParameterDiff(
        added={k: b[k] for k in sorted(b.keys() - a.keys())},
        removed={k: a[k] for k in sorted(a.keys() - b.keys())},
        changed={k: {"a": a[k], "b": b[k]} for k in sorted(a.keys() & b.keys()) if a[k] != b[k]},
        same=sorted(k for k in a.keys() & b.keys() if a[k] == b[k]),
    )


def _task_side(t: TaskRun | None) -> TaskRunSide | None:
    if t is None:
        return None
    duration = t.total_run_time if t.start_time else None
    return TaskRunSide(
        state=t.state.name if t.state else None, duration=duration, run_count=t.run_count
    )


def _diff_task_runs(a: Sequence[TaskRun], b: Sequence[TaskRun]) -> list[TaskRunDiff]:
    by_a = {f"{t.task_key}-{t.dynamic_key}": t for t in a}
    by_b = {f"{t.task_key}-{t.dynamic_key}": t for t in b}
    keys = list(by_a) + [k for k in by_b if k not in by_a]
    rows = []
    for key in keys:
        ta, tb = by_a.get(key), by_b.get(key)
        sa, sb = _task_side(ta), _task_side(tb)
        some = ta or tb
        assert some is not None
        rows.append(
            TaskRunDiff(
                key=key,
                name=some.name,
                a=sa,
                b=sb,
                state_changed=(sa.state if sa else None) != (sb.state if sb else None),
                delta=_delta(sa.duration if sa else None, sb.duration if sb else None),
            )
        )
    return rows


# -- cells --------------------------------------------------------------------------------


@dataclass
class _Cell:
    index: int
    cell_id: str | None
    source: str
    text: list[str]
    html: list[tuple[str, str | None]]
    images: list[ImageInfo]

    @property
    def label(self) -> str:
        first = next((line for line in self.source.splitlines() if line.strip()), "")
        magic = _MAGIC.match(first)
        if magic:
            return magic.group(1)
        return first[:60] or f"cell {self.index}"


def _joined(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value or "")


def _image(mime: str, data: Any) -> ImageInfo:
    text = _joined(data)
    if mime == "image/svg+xml":
        raw = text.encode()
    else:
        try:
            raw = base64.b64decode(text, validate=False)
        except (binascii.Error, ValueError):
            raw = text.encode()
    width = height = None
    if mime == "image/png" and raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) >= 24:
        width, height = struct.unpack(">II", raw[16:24])
    return ImageInfo(
        mime=mime,
        bytes=len(raw),
        sha256=hashlib.sha256(raw).hexdigest(),
        width=width,
        height=height,
    )


def _read_cell(index: int, cell: dict[str, Any]) -> _Cell:
    parsed = _Cell(index, cell.get("id"), _joined(cell.get("source")), [], [], [])
    for out in cell.get("outputs") or []:
        kind = out.get("output_type")
        if kind == "stream":
            parsed.text.append(_joined(out.get("text")))
        elif kind == "error":
            parsed.text.append(f"{out.get('ename')}: {_ANSI.sub('', str(out.get('evalue')))}\n")
        elif kind in ("execute_result", "display_data"):
            data = out.get("data") or {}
            if _WIDGET in data:
                continue
            image = next((m for m in _IMAGES if m in data), None)
            plain = _joined(data["text/plain"]) if "text/plain" in data else None
            if image is not None:
                parsed.images.append(_image(image, data[image]))
            elif "text/html" in data:
                parsed.html.append((_joined(data["text/html"]), plain))
            elif plain is not None:
                parsed.text.append(plain if plain.endswith("\n") else plain + "\n")
            elif "application/json" in data:
                parsed.text.append(json.dumps(data["application/json"], sort_keys=True) + "\n")
    return parsed


def _code_cells(notebook: dict[str, Any]) -> list[_Cell]:
    cells = []
    for index, cell in enumerate(notebook.get("cells") or []):
        tags = (cell.get("metadata") or {}).get("tags") or []
        if cell.get("cell_type") == "code" and "injected-parameters" not in tags:
            cells.append(_read_cell(index, cell))
    return cells


def _keys(cells: Iterable[_Cell], by_id: bool) -> list[str]:
    return [c.cell_id if by_id and c.cell_id else c.source for c in cells]


def _diff_cells(nb_a: dict[str, Any], nb_b: dict[str, Any]) -> list[CellDiff]:
    a, b = _code_cells(nb_a), _code_cells(nb_b)
    by_id = all(c.cell_id for c in a) and all(c.cell_id for c in b)
    return _match(a, b, [_keys(a, by_id), _keys(b, by_id)], relabel=True)


def _match(a: list[_Cell], b: list[_Cell], keys: list[list[str]], relabel: bool) -> list[CellDiff]:
    """Pair cells by ``keys``; an unequal block is paired again by label (task names)."""
    matcher = difflib.SequenceMatcher(None, keys[0], keys[1], autojunk=False)
    out: list[CellDiff] = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal" or (op == "replace" and i2 - i1 == j2 - j1):
            out.extend(_compare(x, y) for x, y in zip(a[i1:i2], b[j1:j2], strict=True))
        elif op == "replace" and relabel:
            block_a, block_b = a[i1:i2], b[j1:j2]
            labels = [[c.label for c in block_a], [c.label for c in block_b]]
            out.extend(_match(block_a, block_b, labels, relabel=False))
        else:
            out.extend(_one_side(x, "removed") for x in a[i1:i2])
            out.extend(_one_side(y, "added") for y in b[j1:j2])
    return out


def _one_side(cell: _Cell, status: Literal["added", "removed"]) -> CellDiff:
    removed = status == "removed"
    return CellDiff(
        index_a=cell.index if removed else None,
        index_b=None if removed else cell.index,
        cell_id=cell.cell_id,
        label=cell.label,
        status=status,
        source_changed=True,
        text_diff=[],
        tables=[],
        images=[],
    )


def _compare(x: _Cell, y: _Cell) -> CellDiff:
    text_a, text_b = "".join(x.text), "".join(y.text)
    text_diff = []
    if text_a != text_b:
        text_diff = list(
            difflib.unified_diff(
                text_a.splitlines(),
                text_b.splitlines(),
                fromfile=f"a: cell {x.index}",
                tofile=f"b: cell {y.index}",
                lineterm="",
            )
        )
    tables = []
    for i in range(max(len(x.html), len(y.html))):
        ha = x.html[i] if i < len(x.html) else None
        hb = y.html[i] if i < len(y.html) else None
        if ha is not None and hb is not None and ha[0] == hb[0]:
            continue
        is_table = any(h is not None and "<table" in h[0] for h in (ha, hb))
        tables.append(
            HtmlChange(
                kind="table" if is_table else "html",
                a=ha[0] if ha else None,
                b=hb[0] if hb else None,
                a_text=ha[1] if ha else None,
                b_text=hb[1] if hb else None,
            )
        )
    images = []
    for i in range(max(len(x.images), len(y.images))):
        ia = x.images[i] if i < len(x.images) else None
        ib = y.images[i] if i < len(y.images) else None
        if ia is None or ib is None or ia.sha256 != ib.sha256:
            images.append(ImageChange(a=ia, b=ib))
    source_changed = x.source != y.source
    changed = bool(text_diff or tables or images or source_changed)
    return CellDiff(
        index_a=x.index,
        index_b=y.index,
        cell_id=x.cell_id if x.cell_id == y.cell_id else None,
        label=x.label,
        status="changed" if changed else "same",
        source_changed=source_changed,
        text_diff=text_diff,
        tables=tables,
        images=images,
    )
