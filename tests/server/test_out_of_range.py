"""Numbers too large for the store are a 400 naming the field (found by tests/server/test_fuzz.py)."""

from __future__ import annotations

from uuid import uuid4

from tests.server.helpers import Api

HUGE = 2**65


async def test_huge_offset_is_a_400_naming_the_query_field(api: Api) -> None:
    status, body = await api("GET", "flows", params={"offset": str(HUGE)})
    assert status == 400, body
    assert body["errors"][0]["field"] == "query.offset"


async def test_huge_log_level_is_a_400_naming_the_body_field(api: Api) -> None:
    log = {"flow_run_id": str(uuid4()), "message": "m", "level": HUGE}
    status, body = await api("POST", "logs/batch", body={"logs": [log]})
    assert status == 400, body
    assert body["errors"][0]["field"] == "body.logs.0.level"
    assert "64 bits" in body["message"]
