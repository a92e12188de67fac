// An MCP host of the API's MCP endpoint, with the official TypeScript SDK
// (@modelcontextprotocol/sdk): prints what it saw, as JSON, for tests/suites/mcp_world.rs.
//   node mcp_host.mjs URL MODE TOOL [ARGS_JSON]
// MODE: call      call TOOL with ARGS
//       abort     call TOOL, abort it after ABORT_MS (the user's stop button), linger, close
//       progress  call TOOL with a 60 s request timeout that resets on progress
//       die       call TOOL and exit after ABORT_MS without a word (a host that dies)
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const [url, mode, tool, args = '{}'] = process.argv.slice(2);
const client = new Client({ name: 'ak-tests', version: '1.0.0' });
const transport = new StreamableHTTPClientTransport(new URL(url));
await client.connect(transport);
const out = { session: transport.sessionId ?? null, tools: (await client.listTools()).tools.map((t) => t.name) };
const text = (r) => (r.content ?? []).filter((c) => c.type === 'text').map((c) => c.text).join('');
const started = Date.now();
try {
  if (mode === 'call') {
    const r = await client.callTool({ name: tool, arguments: JSON.parse(args) });
    Object.assign(out, { isError: r.isError ?? false, text: text(r), structured: r.structuredContent ?? null });
  } else if (mode === 'abort') {
    const ac = new AbortController();
    setTimeout(() => ac.abort('user pressed stop'), Number(process.env.ABORT_MS ?? 1500));
    try {
      await client.callTool({ name: tool, arguments: JSON.parse(args) }, undefined, { signal: ac.signal });
      out.aborted = false;
    } catch (e) {
      out.aborted = true;
      out.error = String(e.message ?? e);
    }
    await new Promise((r) => setTimeout(r, Number(process.env.LINGER_MS ?? 3000)));
  } else if (mode === 'die') {
    setTimeout(() => { console.log(JSON.stringify({ died: true })); process.exit(0); }, Number(process.env.ABORT_MS ?? 1500));
    await client.callTool({ name: tool, arguments: JSON.parse(args) });
  } else if (mode === 'progress') {
    const progress = [];
    const r = await client.callTool({ name: tool, arguments: JSON.parse(args) }, undefined, {
      timeout: Number(process.env.TIMEOUT_MS ?? 60000),
      resetTimeoutOnProgress: true,
      onprogress: (p) => progress.push({ progress: p.progress, at: Date.now() - started }),
    });
    Object.assign(out, { isError: r.isError ?? false, text: text(r), progress });
  }
} catch (e) {
  out.failed = String(e.message ?? e);
}
out.seconds = (Date.now() - started) / 1000;
await client.close();
console.log(JSON.stringify(out));
