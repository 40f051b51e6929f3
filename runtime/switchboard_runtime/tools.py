"""Tools the model may call during a call: registered by the host, run with a timeout, and
never able to crash the call (a failure becomes the tool's output, for the model to handle)."""

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

ToolFunction = Callable[[dict[str, Any]], Awaitable[Any]]


@dataclass(frozen=True)
class ToolResult:
    ok: bool
    output: Any
    # A failure inside the host's tool (it raised or timed out): the agent's own tool, not the
    # model asking for a tool that does not exist or with arguments that do not parse.
    failed_in_tool: bool = False


class ToolRegistry:
    def __init__(self, timeout_seconds: float = 10.0) -> None:
        self.timeout_seconds = timeout_seconds
        self._tools: dict[str, ToolFunction] = {}

    def register(self, name: str, function: ToolFunction) -> None:
        self._tools[name] = function

    def tool(self, name: str) -> Callable[[ToolFunction], ToolFunction]:
        """Decorator form of `register`."""

        def decorate(function: ToolFunction) -> ToolFunction:
            self.register(name, function)
            return function

        return decorate

    @property
    def names(self) -> list[str]:
        return sorted(self._tools)

    async def run(self, name: str, arguments_json: str) -> ToolResult:
        function = self._tools.get(name)
        if function is None:
            return ToolResult(False, {"error": f"unknown tool '{name}'"})
        try:
            arguments = json.loads(arguments_json or "{}")
            if not isinstance(arguments, dict):
                raise ValueError("arguments must be a JSON object")
        except ValueError as exc:
            return ToolResult(False, {"error": f"invalid arguments: {exc}"})
        try:
            result = await asyncio.wait_for(function(arguments), timeout=self.timeout_seconds)
        except TimeoutError:
            return ToolResult(
                False,
                {"error": f"tool '{name}' timed out after {self.timeout_seconds:g}s"},
                failed_in_tool=True,
            )
        except Exception as exc:
            logger.warning("tool %s failed: %s", name, type(exc).__name__)
            return ToolResult(False, {"error": f"tool '{name}' failed: {exc}"}, failed_in_tool=True)
        return ToolResult(True, result)
