"""The same pipeline from a ``@flow`` function: ``python pipeline_flow.py`` (from this folder)."""

from __future__ import annotations

from nbflow import flow, run_notebook


@flow(name="sales_pipeline_py")
def sales_pipeline(regions: list[str] = ["EU", "US"]) -> int:  # noqa: B006
    """Fan out one ``sales.ipynb`` run per region, then join their totals in ``report.ipynb``."""
    runs = run_notebook.map("sales.ipynb", [{"region": r} for r in regions])
    totals = {r: run.result().outputs["total"] for r, run in zip(regions, runs, strict=True)}
    report = run_notebook("report.ipynb", {"totals": totals})
    grand_total: int = report.outputs["grand_total"]
    print(f"grand total {grand_total} (report run {report.id})")
    return grand_total


if __name__ == "__main__":
    sales_pipeline()
