"""Grok's tool format lives in one function."""

from control_plane.sessions.engines import to_grok_tools
from control_plane.workspaces.models import BuiltinTools, FunctionTool, XSearchConfig


def test_function_and_builtin_tools() -> None:
    function = FunctionTool(
        name="f", description="d", parameters={"type": "object", "properties": {}}
    )
    tools = to_grok_tools([function], BuiltinTools(web_search=True, x_search=XSearchConfig()))
    assert tools == [
        {
            "type": "function",
            "name": "f",
            "description": "d",
            "parameters": {"type": "object", "properties": {}},
        },
        {"type": "web_search"},
        {"type": "x_search"},
    ]
    assert to_grok_tools([], BuiltinTools()) == []
