"""An MCP client for the tests, written with the Python MCP SDK: lists the tools of an MCP
endpoint and calls one, printing what it got as JSON.

    python client.py URL TOOL PROMPT
"""

import asyncio
import json
import sys

from mcp import Client


async def main(url: str, tool: str, prompt: str) -> None:
    async with Client(url) as client:
        listed = await client.list_tools()
        result = await client.call_tool(tool, {"prompt": prompt})
        texts = [block.text for block in result.content if getattr(block, "type", "") == "text"]
        print(json.dumps({
            "tools": [{"name": t.name, "description": t.description, "schema": t.input_schema} for t in listed.tools],
            "text": "\n".join(texts),
            "is_error": bool(result.is_error),
            "structured": result.structured_content,
        }))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
