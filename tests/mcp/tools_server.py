"""An MCP server for the tests, written with the Python MCP SDK: two tools over streamable
HTTP (stateless) on loopback. `add` answers at once; `slow_echo` waits before answering.

    python tools_server.py PORT
"""

import asyncio
import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("ak-test-tools")


@server.tool()
def add(a: int, b: int) -> int:
    """Adds two integers."""
    return a + b


@server.tool()
async def slow_echo(text: str, seconds: float = 5.0) -> str:
    """Echoes the text after waiting the given number of seconds."""
    await asyncio.sleep(seconds)
    return text


if __name__ == "__main__":
    server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]), stateless_http=True)
