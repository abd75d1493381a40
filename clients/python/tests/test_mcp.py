"""A real MCP client (the ``mcp`` package's stdio client) against ``drover
mcp``, started the way an agent's host starts it: the command with
``DROVER_API`` and ``DROVER_API_TOKEN`` in its environment, pointed at the
session's ``drover dev``. Lists the tools, submits, waits for and reads a
task, and sees the API's errors (an unknown handler, a read-only token
submitting) as tool results with ``isError`` and the API's code."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from mcp import Client, StdioServerParameters

from conftest import ADMIN_TOKEN, READ_TOKEN, REPO, Cluster

BINARY = os.environ.get("DROVER_BIN", str(REPO / "target" / "release" / "drover"))


@asynccontextmanager
async def drover_mcp(cluster: Cluster, token: str) -> AsyncIterator[Client]:
    server = StdioServerParameters(
        command=str(Path(BINARY)), args=["mcp"], env={"DROVER_API": cluster.url, "DROVER_API_TOKEN": token}
    )
    async with Client(server, read_timeout_seconds=60) as client:
        yield client


def structured(result: Any) -> dict[str, Any]:
    content = result.structured_content
    assert isinstance(content, dict), result
    return content


async def test_lists_the_tools_with_their_schemas(cluster: Cluster) -> None:
    async with drover_mcp(cluster, ADMIN_TOKEN) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == {
        "submit_task", "get_task", "wait_task", "cancel_task", "list_tasks", "list_queues", "list_workers",
    }
    submit = tools["submit_task"].input_schema
    assert submit["type"] == "object"
    assert submit["required"] == ["handler"]
    assert {"handler", "input", "queue", "priority", "tags", "max_attempts", "timeout", "delay",
            "idempotency_key", "unique_key"} <= set(submit["properties"])


async def test_submit_wait_get_and_list(cluster: Cluster) -> None:
    async with drover_mcp(cluster, ADMIN_TOKEN) as client:
        submitted = await client.call_tool("submit_task", {"handler": "echo", "input": {"via": "mcp"}})
        assert not submitted.is_error, submitted
        task_id = structured(submitted)["id"]

        waited = await client.call_tool("wait_task", {"id": task_id, "timeout_seconds": 20})
        assert not waited.is_error, waited
        assert structured(waited)["state"] == "succeeded"
        assert structured(waited)["result"] == {"via": "mcp"}

        got = await client.call_tool("get_task", {"id": task_id})
        assert structured(got)["id"] == task_id
        assert structured(got)["handler"] == "echo"

        noop = await client.call_tool("submit_task", {"handler": "noop", "queue": "mcp-tests"})
        noop_id = structured(noop)["id"]
        assert structured(await client.call_tool("wait_task", {"id": noop_id}))["state"] == "succeeded"
        listed = structured(await client.call_tool("list_tasks", {"queue": "mcp-tests", "state": "succeeded"}))
        assert [t["id"] for t in listed["tasks"]] == [noop_id]
        queues = structured(await client.call_tool("list_queues", {}))
        assert "mcp-tests" in {q["name"] for q in queues["queues"]}
        workers = structured(await client.call_tool("list_workers", {}))
        assert len(workers["workers"]) == 2


async def test_api_errors_are_tool_errors_with_the_code(cluster: Cluster) -> None:
    async with drover_mcp(cluster, ADMIN_TOKEN) as client:
        unknown = await client.call_tool("submit_task", {"handler": "no-such-handler", "input": 1})
        assert unknown.is_error
        assert structured(unknown)["error"]["code"] == "unknown_handler"
        assert structured(unknown)["error"]["status"] == 422
        text = unknown.content[0]
        assert getattr(text, "text", "").endswith("(unknown_handler)"), unknown

        missing = await client.call_tool("get_task", {"id": "0" * 22})
        assert missing.is_error and structured(missing)["error"]["code"] == "not_found"

    # The token's scopes are the tools' scopes: a read token cannot submit.
    async with drover_mcp(cluster, READ_TOKEN) as client:
        refused = await client.call_tool("submit_task", {"handler": "noop"})
        assert refused.is_error and structured(refused)["error"]["code"] == "forbidden"
        assert not (await client.call_tool("list_workers", {})).is_error
