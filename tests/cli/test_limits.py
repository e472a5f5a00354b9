"""``nbflow limits``: concurrency limits per flow and tag, in the embedded store."""

from __future__ import annotations

from pathlib import Path

from nbflow.client.embedded import EmbeddedClient
from nbflow.schemas import Flow, FlowRunCreate
from nbflow.states import Scheduled
from tests.cli.conftest import Runner


def test_set_list_remove_and_the_claim_honours_them(nbflow: Runner, nbflow_home: Path) -> None:
    assert nbflow("limits", "ls").out.startswith("no flow or tag concurrency limits")
    done = nbflow("limits", "set", "tag:gpu", "1")
    assert done.code == 0 and done.out == "tag:gpu: at most 1 run(s) at once\n"
    bad = nbflow("limits", "set", "gpu", "1")
    assert bad.code == 2 and "key='gpu': is not flow:<flow name> or tag:<tag>" in bad.err
    assert nbflow("limits", "ls").out.splitlines() == ["KEY      LIMIT", "tag:gpu  1"]

    client = EmbeddedClient.from_url(f"sqlite:///{nbflow_home / 'nbflow.db'}")
    try:
        flow = client.create_flow(Flow(name="f"))
        for _ in range(2):
            client.create_flow_run(
                FlowRunCreate(
                    flow_id=flow.id, mode="batch", runner="subprocess", tags=["gpu"],
                    state=Scheduled(),
                )
            )  # fmt: skip
        assert len(client.claim_flow_runs(["subprocess"], claimer="test")) == 1
        assert nbflow("limits", "rm", "tag:gpu").code == 0
        assert len(client.claim_flow_runs(["subprocess"], claimer="test")) == 1
    finally:
        client.close()
    missing = nbflow("limits", "rm", "tag:gpu")
    assert missing.code == 1 and "no concurrency limit 'tag:gpu'" in missing.err
