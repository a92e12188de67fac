// Drives an AG-UI endpoint with the official client, @ag-ui/client 1.0's HttpAgent (runAgent,
// with its own event verification), and prints what it saw as JSON for the integration tests
// (tests/suites/agui_ai_sdk.rs) to check.
//   node agui.mjs URL SCENARIO [ARGS...]
//     run PROMPT THREAD RUN   one run; the events, the result and the messages it assembled
//     frontend PROMPT         a front-end tool ("confirm"): the run that calls it, the client's
//                             result, and the run that continues from it
import { HttpAgent } from '@ag-ui/client';

process.env.SUPPRESS_TRANSFORMATION_WARNINGS ??= '1';
const [url, scenario, ...args] = process.argv.slice(2);
const headers = process.env.AGUI_TOKEN ? { Authorization: `Bearer ${process.env.AGUI_TOKEN}` } : {};

async function run(agent, params = {}) {
  const events = [];
  const failures = [];
  const outcome = await agent.runAgent(params, {
    onEvent: ({ event }) => void events.push(event),
    onRunFailed: ({ error }) => void failures.push(String(error?.message ?? error)),
  }).catch((error) => ({ error: String(error?.message ?? error) }));
  return {
    error: outcome.error ?? null,
    failures,
    types: events.map((e) => e.type),
    events,
    result: outcome.result ?? null,
    messages: agent.messages.map((m) => ({
      role: m.role,
      name: m.name ?? null,
      content: m.content ?? null,
      toolCalls: (m.toolCalls ?? []).map((c) => ({ id: c.id, name: c.function.name, arguments: c.function.arguments })),
      toolCallId: m.toolCallId ?? null,
    })),
  };
}

let out;
if (scenario === 'run') {
  const [prompt, threadId, runId] = args;
  const agent = new HttpAgent({ url, headers, threadId, initialMessages: [{ id: 'u1', role: 'user', content: prompt }] });
  out = await run(agent, { runId });
} else if (scenario === 'frontend') {
  const [prompt] = args;
  const tools = [{ name: 'confirm', description: 'Ask the user to confirm.', parameters: { type: 'object', properties: { question: { type: 'string' } }, required: ['question'] } }];
  const agent = new HttpAgent({ url, headers, threadId: 'thread-fe', initialMessages: [{ id: 'u1', role: 'user', content: prompt }] });
  const first = await run(agent, { runId: 'fe-run-1', tools });
  const pending = first.events.at(-1)?.outcome?.pendingToolCallIds ?? [];
  for (const id of pending) agent.addMessage({ id: `result-${id}`, role: 'tool', toolCallId: id, content: 'yes, confirmed' });
  const second = await run(agent, { runId: 'fe-run-2', tools });
  out = { first, pending, second };
}
console.log(JSON.stringify(out));
