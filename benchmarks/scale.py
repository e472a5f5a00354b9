"""Store scale: the runs list, its filters and a run's page with 100k flow runs and 1M task runs.

Seeds a scratch store — a SQLite file, and a PostgreSQL schema when
``NBFLOW_TEST_POSTGRES_URL`` is set (created and dropped here) — with ``--runs`` flow runs
of 20 flows and 50 deployments spread over the last year (80% Completed, 10% Failed, the
rest Cancelled, Crashed, Running or Scheduled ahead), each with ``--tasks`` task runs (one
state each), three states and ``--logs`` log records.  Seeding bypasses the API: bulk
``executemany`` on SQLite, ``COPY`` on PostgreSQL, after the store's own migrations.

Then it starts a real ``nbflow server`` (services off) on the store and measures, through
the HTTP API from this process, p50/p95 of ``--repeat`` requests each:

* the runs list as the panel asks for it (``view=history``, 50 a page, with its total):
  the first page, a page in the middle and the last page;
* each filter (state, flow, deployment, a one-week expected-start range), first page;
* a run's page: the run, its states, its task-run graph, its logs, its task runs;

and the server's RSS before, during and after paging through the whole list.  With
``--explain`` it also prints the plan of each store query (SQLite ``EXPLAIN QUERY PLAN``,
PostgreSQL ``EXPLAIN``) — the statements captured from the store's own code.  Target
(issue 14): p95 < 50 ms.  Writes ``benchmarks/results/scale.json``.

    .venv/bin/python benchmarks/scale.py [--runs 100000] [--tasks 10] [--db sqlite|postgres|all]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from _scratch_db import scratch_postgres
from api_latency import TOKEN, nbflow_server

RESULTS = Path(__file__).parent / "results"
PAGE = 50
FLOWS, DEPLOYMENTS = 20, 50
#: Final state of a run by share (the rest of the cumulative range: SCHEDULED ahead).
OUTCOMES = [
    ("COMPLETED", "Completed", 0.80),
    ("FAILED", "Failed", 0.90),
    ("CANCELLED", "Cancelled", 0.93),
    ("CRASHED", "Crashed", 0.95),
    ("RUNNING", "Running", 0.97),
]
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}


# -- seeding -------------------------------------------------------------------------------


class Writer:
    """Bulk rows into one table in the database's own text forms (fast, no ORM)."""

    def __init__(self, conn: Any, dialect: str) -> None:
        self.conn = conn  # the DBAPI connection
        self.sqlite = dialect == "sqlite"

    def uid(self, value: uuid.UUID | None) -> str | None:
        if value is None:
            return None
        return value.hex if self.sqlite else str(value)

    def ts(self, value: datetime | None) -> str | None:
        if value is None:
            return None
        text = value.isoformat(" ", "microseconds")[:26]
        return text if self.sqlite else text + "+00"

    def write(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        if self.sqlite:
            marks = ", ".join("?" * len(columns))
            sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
            self.conn.cursor().executemany(sql, rows)
            return
        buffer = io.StringIO()
        for row in rows:
            buffer.write(
                "\t".join(
                    "\\N" if v is None else str(v).replace("\\", "\\\\").replace("\t", " ")
                    for v in row
                )
            )
            buffer.write("\n")
        with (
            self.conn.cursor() as cur,
            cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy,
        ):
            copy.write(buffer.getvalue())


class _Ids:
    """Time-ordered UUIDs (the layout of UUIDv7: milliseconds first, then a counter), so
    bulk inserts append to every index on an id instead of landing at random pages; reads
    look ids up through the same B-trees either way."""

    def __init__(self) -> None:
        self.prefix = int(time.time() * 1000) << 80
        self.counter = 0

    def __call__(self) -> uuid.UUID:
        self.counter += 1
        return uuid.UUID(int=self.prefix | (0x7 << 76) | (self.counter << 8))


def _state_json(state_id: uuid.UUID, type_: str, name: str, at: datetime) -> str:
    stamp = at.isoformat(timespec="microseconds").replace("+00:00", "Z")
    return (
        f'{{"id":"{state_id}","type":"{type_}","name":"{name}","timestamp":"{stamp}",'
        '"message":null,"scheduled_time":null,"data":{}}'
    )


def seed(db_url: str, runs: int, tasks: int, logs_per_run: int) -> dict[str, Any]:
    """Fill a fresh store; return ids the measurements ask about and the seeding time."""
    from nbflow.orchestration.store import Store
    from nbflow.schemas import DeploymentCreate, Flow

    started = time.perf_counter()
    store = Store.from_url(db_url)
    flow_ids = [
        store.create_flow(Flow(name=f"flow-{i}", parameters_schema={})).id for i in range(FLOWS)
    ]
    deployments = [
        store.create_deployment(
            DeploymentCreate(flow_id=flow_ids[i % FLOWS], name=f"deploy-{i}", runner="subprocess")
        )
        for i in range(DEPLOYMENTS)
    ]
    rng = random.Random(14)
    new_id = _Ids()
    now = datetime.now(UTC)
    year = timedelta(days=365)
    run_cols = [
        "id", "name", "flow_id", "deployment_id", "parameters", "state_id", "state_type",
        "state_name", "state_timestamp", "state_json", "run_count", "start_time", "end_time",
        "total_run_time", "expected_start_time", "tags", "runner", "job_variables", "mode",
        "created", "updated",
    ]  # fmt: skip
    state_cols = ["state_id", "flow_run_id", "type", "name", "timestamp", "state_json"]
    task_cols = [
        "id", "flow_run_id", "name", "task_key", "dynamic_key", "state_type", "state_name",
        "state_json", "run_count", "start_time", "end_time", "total_run_time", "upstream",
        "inputs", "outputs", "tags", "created", "updated",
    ]  # fmt: skip
    tstate_cols = ["state_id", "task_run_id", "type", "name", "timestamp", "state_json"]
    log_cols = ["flow_run_id", "task_run_id", "level", "logger", "message", "timestamp"]
    sample: dict[str, Any] = {"run_ids": [], "deployment_id": str(deployments[7].id)}
    raw = store.engine.raw_connection()
    w = Writer(raw, store.dialect)
    chunk = 2000
    try:
        for start in range(0, runs, chunk):
            fr, frs, tr, trs, lg = [], [], [], [], []
            for i in range(start, min(runs, start + chunk)):
                run_id = new_id()
                # Oldest first, evenly over the last year; a few scheduled ahead.
                created = now - year + year * (i / runs)
                roll = rng.random()
                type_, name = next(
                    ((t, n) for t, n, edge in OUTCOMES if roll < edge), ("SCHEDULED", "Scheduled")
                )
                deployment = deployments[rng.randrange(DEPLOYMENTS)] if roll < 0.8 else None
                flow_id = deployment.flow_id if deployment else flow_ids[rng.randrange(FLOWS)]
                expected = created + (timedelta(days=2) if type_ == "SCHEDULED" else timedelta())
                start_t = None if type_ == "SCHEDULED" else created + timedelta(seconds=1)
                end_t = created + timedelta(seconds=30) if type_ in TERMINAL else None
                at = end_t or start_t or created
                sid = new_id()
                fr.append(
                    (
                        w.uid(run_id), f"run-{i}", w.uid(flow_id),
                        w.uid(deployment.id if deployment else None), '{"n": 3}', w.uid(sid),
                        type_, name, w.ts(at), _state_json(sid, type_, name, at),
                        0 if type_ == "SCHEDULED" else 1, w.ts(start_t), w.ts(end_t),
                        29.0 if end_t else 0.0, w.ts(expected), "[]", "subprocess", "{}",
                        "batch", w.ts(created), w.ts(at),
                    )
                )  # fmt: skip
                history = [("SCHEDULED", "Scheduled", created)]
                if start_t is not None:
                    history.append(("RUNNING", "Running", start_t))
                if end_t is not None:
                    history.append((type_, name, end_t))
                for k, (t, n, when) in enumerate(history):
                    hid = sid if k == len(history) - 1 else new_id()
                    frs.append(
                        (w.uid(hid), w.uid(run_id), t, n, w.ts(when), _state_json(hid, t, n, when))
                    )
                if start_t is not None:
                    previous: str | None = None
                    for k in range(tasks):
                        task_id, tsid = new_id(), new_id()
                        t_at = start_t + timedelta(seconds=2 * k + 1)
                        upstream = f'["{previous}"]' if previous else "[]"
                        previous = str(task_id)
                        tr.append(
                            (
                                w.uid(task_id), w.uid(run_id), f"cell-{k}", f"cell-{k}", 0,
                                "COMPLETED", "Completed",
                                _state_json(tsid, "COMPLETED", "Completed", t_at), 1,
                                w.ts(t_at), w.ts(t_at), 1.0, upstream, "[]", "[]", "[]",
                                w.ts(t_at), w.ts(t_at),
                            )
                        )  # fmt: skip
                        trs.append(
                            (
                                w.uid(tsid), w.uid(task_id), "COMPLETED", "Completed", w.ts(t_at),
                                _state_json(tsid, "COMPLETED", "Completed", t_at),
                            )
                        )  # fmt: skip
                    for k in range(logs_per_run):
                        lg.append(
                            (
                                w.uid(run_id), None, 20, "nbflow.flow_runs",
                                f"log line {k} of run {i}",
                                w.ts(start_t + timedelta(seconds=k)),
                            )
                        )  # fmt: skip
                if i % max(1, runs // 40) == 0 and len(sample["run_ids"]) < 40:
                    sample["run_ids"].append(str(run_id))
            if w.sqlite:  # the store's connections are in driver autocommit: one BEGIN
                raw.cursor().execute("BEGIN")
            w.write("flow_runs", run_cols, fr)
            w.write("flow_run_states", state_cols, frs)
            w.write("task_runs", task_cols, tr)
            w.write("task_run_states", tstate_cols, trs)
            w.write("logs", log_cols, lg)
            if w.sqlite:
                raw.cursor().execute("COMMIT")
            else:
                raw.commit()
            done = min(runs, start + chunk)
            if done % (chunk * 10) == 0 or done == runs:
                rate = done / (time.perf_counter() - started)
                print(f"  seeded {done:,}/{runs:,} runs ({rate:,.0f} runs/s)", flush=True)
        _analyze(raw.driver_connection, store.dialect)
    finally:
        raw.close()
    sample["seconds"] = time.perf_counter() - started
    sample["window"] = [
        (now - timedelta(days=180)).isoformat(),
        (now - timedelta(days=173)).isoformat(),
    ]
    store.close()
    return sample


def _analyze(raw: Any, dialect: str) -> None:
    """Give the planner statistics, as a live database has them: PostgreSQL's autovacuum
    (``VACUUM ANALYZE``: statistics and the visibility map index-only scans need), SQLite's
    ``ANALYZE`` (the plans measured are the same without it: docs/store.md)."""
    if dialect == "postgresql":
        raw.autocommit = True
        raw.cursor().execute("VACUUM ANALYZE")
    else:
        raw.cursor().execute("ANALYZE")


def load_sample(db_url: str) -> dict[str, Any] | None:
    """Return the ids to ask about from a store seeded earlier (None: it has no runs)."""
    import sqlalchemy as sa

    from nbflow.orchestration.store import Store
    from nbflow.orchestration.store.tables import deployments, flow_runs

    opened = time.perf_counter()
    store = Store.from_url(db_url)  # migrates a store seeded by an older nbflow
    migrate_seconds = time.perf_counter() - opened
    try:
        with store.engine.connect() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(flow_runs)).scalar_one()
            if not total:
                return None
            step = max(1, total // 40)
            started = (
                sa.select(flow_runs.c.id)
                .where(flow_runs.c.state_type != "SCHEDULED")
                .order_by(flow_runs.c.created)
            )
            ids = [str(r) for r in conn.execute(started).scalars()][::step][:40]
            deployment = conn.execute(
                sa.select(deployments.c.id).where(deployments.c.name == "deploy-7")
            ).scalar_one()
        raw = store.engine.raw_connection()
        try:
            _analyze(raw.driver_connection, store.dialect)  # indexes a migration added
        finally:
            raw.close()
    finally:
        store.close()
    now = datetime.now(UTC)
    return {
        "run_ids": ids,
        "deployment_id": str(deployment),
        "seconds": 0.0,
        "migrate_seconds": migrate_seconds,
        "runs": total,
        "window": [
            (now - timedelta(days=180)).isoformat(),
            (now - timedelta(days=173)).isoformat(),
        ],
    }


# -- query plans ---------------------------------------------------------------------------


def explain(db_url: str, sample: dict[str, Any]) -> dict[str, list[str]]:
    """Return the plan of each statement the store runs for the measured requests."""
    from sqlalchemy import event

    from nbflow.orchestration.store import Store
    from nbflow.schemas import FlowRunFilter, TaskRunFilter

    store = Store.from_url(db_url)
    captured: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            captured.append((statement, params))

    event.listen(store.engine, "before_cursor_execute", capture)
    run_id = uuid.UUID(sample["run_ids"][len(sample["run_ids"]) // 2])
    start_after, start_before = (datetime.fromisoformat(t) for t in sample["window"])
    calls: dict[str, Callable[[], Any]] = {
        "list (history)": lambda: store.read_flow_runs(FlowRunFilter(view="history", limit=PAGE)),
        "count (history)": lambda: store.count_flow_runs(FlowRunFilter(view="history")),
        "filter state": lambda: store.read_flow_runs(
            FlowRunFilter(view="history", state_types=["FAILED"], limit=PAGE)  # type: ignore[list-item]
        ),
        "filter flow": lambda: store.read_flow_runs(
            FlowRunFilter(view="history", flow_names=["flow-3"], limit=PAGE)
        ),
        "filter deployment": lambda: store.read_flow_runs(
            FlowRunFilter(
                view="history", deployment_ids=[uuid.UUID(sample["deployment_id"])], limit=PAGE
            )
        ),
        "filter time range": lambda: store.read_flow_runs(
            FlowRunFilter(
                view="history", start_after=start_after, start_before=start_before, limit=PAGE
            )
        ),
        "upcoming": lambda: store.read_flow_runs(FlowRunFilter(view="upcoming", limit=PAGE)),
        "children": lambda: store.read_flow_runs(FlowRunFilter(parent_flow_run_ids=[run_id])),
        "run states": lambda: store.read_flow_run_states(run_id),
        "task runs": lambda: store.read_task_runs(TaskRunFilter(flow_run_ids=[run_id])),
        "logs": lambda: store.read_logs(run_id, limit=200),
    }
    plans: dict[str, list[str]] = {}
    for label, call in calls.items():
        captured.clear()
        call()
        lines: list[str] = []
        for statement, params in captured:
            with store.engine.connect() as conn:
                raw = conn.connection.driver_connection
                assert raw is not None
                prefix = "EXPLAIN QUERY PLAN " if store.dialect == "sqlite" else "EXPLAIN "
                cur = raw.cursor()
                cur.execute(prefix + statement, params)
                rows = cur.fetchall()
            lines += [str(r[-1] if store.dialect == "sqlite" else r[0]) for r in rows]
        plans[label] = lines
    store.close()
    return plans


# -- measuring -----------------------------------------------------------------------------


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _timed(http: httpx.Client, path: str, params: Any = None) -> tuple[float, Any]:
    t0 = time.perf_counter()
    response = http.get(path, params=params)
    elapsed = (time.perf_counter() - t0) * 1000
    response.raise_for_status()
    return elapsed, response.json()


def _pct(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"p50": round(q[49], 1), "p95": round(q[94], 1), "max": round(ordered[-1], 1)}


def measure(
    url: str, pid: int, sample: dict[str, Any], repeat: int, *, paging: bool = True
) -> dict[str, Any]:
    """Time each request kind ``repeat`` times; page through the list watching the RSS."""
    headers = {"Authorization": f"token {TOKEN}"}
    out: dict[str, Any] = {"latency_ms": {}}
    with httpx.Client(base_url=url + "/", headers=headers, timeout=120) as http:
        history = {"view": "history", "limit": PAGE}
        total = http.get("flow_runs", params=history).json()["total"]
        start_after, start_before = sample["window"]
        kinds: dict[str, Callable[[int], tuple[str, Any]]] = {
            "list: first page": lambda i: ("flow_runs", history),
            "list: middle page": lambda i: ("flow_runs", {**history, "offset": total // 2}),
            "list: last page": lambda i: ("flow_runs", {**history, "offset": total - PAGE}),
            "filter: state": lambda i: ("flow_runs", {**history, "state_types": "FAILED"}),
            "filter: flow": lambda i: ("flow_runs", {**history, "flow_names": f"flow-{i % 20}"}),
            "filter: deployment": lambda i: (
                "flow_runs",
                {**history, "deployment_ids": sample["deployment_id"]},
            ),
            "filter: time range": lambda i: (
                "flow_runs",
                {**history, "start_after": start_after, "start_before": start_before},
            ),
            "list: upcoming": lambda i: ("flow_runs", {"view": "upcoming", "limit": PAGE}),
            "run": lambda i: (f"flow_runs/{_run(sample, i)}", None),
            "run: states": lambda i: (f"flow_runs/{_run(sample, i)}/states", None),
            "run: graph": lambda i: (f"flow_runs/{_run(sample, i)}/graph", None),
            "run: logs": lambda i: ("logs", {"flow_run_id": _run(sample, i)}),
            "run: task runs": lambda i: ("task_runs", {"flow_run_ids": _run(sample, i)}),
        }
        for label, build in kinds.items():
            path, params = build(0)
            _timed(http, path, params)  # warm
            times = [_timed(http, *build(i))[0] for i in range(repeat)]
            out["latency_ms"][label] = _pct(times)
            print(f"  {label:<22} {out['latency_ms'][label]}", flush=True)
        # Twice through the whole list: the first pass fills the database's page cache,
        # the second shows whether memory keeps growing with the pages served.
        before = _rss_kib(pid)
        peak, pages, page_times, after_pass = before, 0, [], []
        for _ in range(2 if paging else 0):
            for offset in range(0, total, 100):
                params = {"view": "history", "limit": 100, "offset": offset}
                page_times.append(_timed(http, "flow_runs", params)[0])
                pages += 1
                if pages % 25 == 0:
                    peak = max(peak, _rss_kib(pid))
            after_pass.append(round(_rss_kib(pid) / 1024, 1))
        out["paging"] = {
            "pages_of_100": pages,
            "rss_mib_before": round(before / 1024, 1),
            "rss_mib_after_each_pass": after_pass,
            "rss_mib_peak": round(peak / 1024, 1),
            "page_ms": _pct(page_times) if page_times else None,
        }
        print(f"  paging the whole list: {out['paging']}", flush=True)
    out["total_history"] = total
    return out


def _run(sample: dict[str, Any], i: int) -> str:
    ids: list[str] = sample["run_ids"]
    return ids[i % len(ids)]


def run_one(label: str, db_url: str, base: Path, args: argparse.Namespace) -> dict[str, Any]:
    sample = load_sample(db_url) if args.reuse else None
    if sample is not None:
        print(
            f"\n{label}: reusing the store seeded earlier ({sample['runs']:,} runs; opened and "
            f"migrated in {sample['migrate_seconds']:.1f} s)",
            flush=True,
        )
    else:
        print(f"\n{label}: seeding {args.runs:,} flow runs x {args.tasks} task runs", flush=True)
        sample = seed(db_url, args.runs, args.tasks, args.logs)
        print(f"  seeded in {sample['seconds']:.0f} s", flush=True)
    if args.seed_only:
        return {"store": label, "seed_seconds": round(sample["seconds"], 1)}
    result: dict[str, Any] = {"store": label, "seed_seconds": round(sample["seconds"], 1)}
    if args.explain:
        result["plans"] = explain(db_url, sample)
        for name, lines in result["plans"].items():
            print(f"  plan of {name}:")
            for line in lines:
                print(f"      {line}")
    with nbflow_server(base, db_url) as (url, pid):
        result.update(measure(url, pid, sample, args.repeat, paging=not args.no_paging))
    if "migrate_seconds" in sample:
        result["migrate_seconds"] = round(sample["migrate_seconds"], 1)
    return result


def kept_postgres(url: str, schema: str = "scale_keep") -> str:
    """Return a URL of the schema ``scale_keep`` (created when missing, never dropped here:
    ``DROP SCHEMA scale_keep CASCADE`` when done)."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    base = make_url(url).set(drivername="postgresql+psycopg")
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    admin.dispose()
    scoped = base.update_query_dict({"options": f"-csearch_path={schema}"})
    return scoped.render_as_string(hide_password=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100_000, help="flow runs (100000)")
    parser.add_argument("--tasks", type=int, default=10, help="task runs per started run (10)")
    parser.add_argument("--logs", type=int, default=5, help="log records per started run (5)")
    parser.add_argument("--repeat", type=int, default=30, help="requests per measurement (30)")
    parser.add_argument("--db", choices=["sqlite", "postgres", "all"], default="all")
    parser.add_argument("--explain", action="store_true", help="print each store query's plan")
    parser.add_argument(
        "--keep",
        metavar="DIR",
        help="keep the stores: the SQLite file in DIR, the PostgreSQL schema scale_keep",
    )
    parser.add_argument(
        "--reuse", action="store_true", help="with --keep: measure the kept stores, no seeding"
    )
    parser.add_argument("--seed-only", action="store_true", help="seed, measure nothing")
    parser.add_argument(
        "--no-paging", action="store_true", help="skip paging through the whole list (RSS)"
    )
    args = parser.parse_args()
    pg_url = os.environ.get("NBFLOW_TEST_POSTGRES_URL")
    load = os.getloadavg()
    summaries = []
    with tempfile.TemporaryDirectory(prefix="nbflow-scale-") as tmp:
        if args.db in ("sqlite", "all"):
            base = Path(args.keep or tmp) / "sqlite"
            base.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{base / 'nbflow.db'}"
            summaries.append(run_one("SQLite", url, base, args))
        if args.db in ("postgres", "all"):
            if not pg_url:
                print("\nPostgreSQL: skipped (set NBFLOW_TEST_POSTGRES_URL)")
            else:
                base = Path(tmp) / "postgres"
                base.mkdir()
                if args.keep:
                    db_url = kept_postgres(pg_url)
                    summaries.append(run_one("PostgreSQL", db_url, base, args))
                else:
                    with scratch_postgres(pg_url, prefix="scale") as db_url:
                        summaries.append(run_one("PostgreSQL", db_url, base, args))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "scale.json"
    doc = {
        "runs": args.runs,
        "tasks_per_run": args.tasks,
        "logs_per_run": args.logs,
        "repeat": args.repeat,
        "load_average_at_start": [round(x, 2) for x in load],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "stores": summaries,
    }
    out.write_text(json.dumps(doc, indent=2))
    print(f"\nsaved {out}")


if __name__ == "__main__":
    main()
