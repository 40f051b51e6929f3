"""Whose fault a failed tool call is: the agent's own tool (it raised, it timed out) or the
model's (a tool that does not exist, arguments that do not parse). The rollout guard counts
only the model's against the tier; the agent's are its workspace's."""

import asyncio
from typing import Any

from switchboard_runtime.tools import ToolRegistry


async def raises(arguments: dict[str, Any]) -> Any:
    raise RuntimeError("order service down")


async def hangs(arguments: dict[str, Any]) -> Any:
    await asyncio.sleep(10)


async def answers(arguments: dict[str, Any]) -> Any:
    return {"status": "shipped"}


async def test_failures_inside_the_tool_and_failures_of_the_request_are_told_apart() -> None:
    tools = ToolRegistry(timeout_seconds=0.05)
    for name, function in (("raises", raises), ("hangs", hangs), ("answers", answers)):
        tools.register(name, function)
    results = {
        "raised": await tools.run("raises", "{}"),
        "timed out": await tools.run("hangs", "{}"),
        "unknown tool": await tools.run("nowhere", "{}"),
        "bad arguments": await tools.run("answers", "[1, 2"),
        "not an object": await tools.run("answers", "[1, 2]"),
        "answered": await tools.run("answers", "{}"),
    }
    assert {why: (r.ok, r.failed_in_tool) for why, r in results.items()} == {
        "raised": (False, True),
        "timed out": (False, True),
        "unknown tool": (False, False),
        "bad arguments": (False, False),
        "not an object": (False, False),
        "answered": (True, False),
    }
