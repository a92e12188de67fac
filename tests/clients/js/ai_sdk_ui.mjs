// Drives the AI SDK UI message stream endpoint with the `ai` package (6.x): DefaultChatTransport
// (what useChat uses) and readUIMessageStream, and prints what it saw as JSON for the
// integration tests (tests/suites/agui_ai_sdk.rs) to check.
//   node ai_sdk_ui.mjs API SCENARIO [ARGS...]      (API: <origin>/api/v1/ai-sdk/chat)
//     send CHAT PROMPT            one message; the assembled assistant message
//     drop CHAT PROMPT N          read N chunks of the answer, drop the connection, then resume
//                                 (reconnectToStream) and assemble the message from the resumed stream
//     resume CHAT                 only the resume call: its result (null on 204)
import { DefaultChatTransport, readUIMessageStream } from 'ai';

const [api, scenario, ...args] = process.argv.slice(2);
const headers = process.env.AISDK_TOKEN ? { Authorization: `Bearer ${process.env.AISDK_TOKEN}` } : {};
const transport = new DefaultChatTransport({ api, headers });
const errors = [];

function user(text) {
  return [{ id: 'u1', role: 'user', parts: [{ type: 'text', text }] }];
}

async function assemble(stream) {
  let message = null;
  for await (const m of readUIMessageStream({ stream, onError: (e) => errors.push(String(e?.message ?? e)) })) message = m;
  return message;
}

function summary(message) {
  if (!message) return null;
  return {
    id: message.id,
    role: message.role,
    text: message.parts.filter((p) => p.type === 'text').map((p) => p.text).join(''),
    parts: message.parts.map((p) => p.type),
    tools: message.parts.filter((p) => p.type === 'dynamic-tool').map((p) => ({ name: p.toolName, state: p.state, input: p.input, output: p.output ?? null })),
    agents: message.parts.filter((p) => p.type === 'data-agent').map((p) => p.data.agent),
    metadata: message.metadata ?? null,
  };
}

let out;
if (scenario === 'send') {
  const [chatId, prompt] = args;
  const stream = await transport.sendMessages({ chatId, trigger: 'submit-message', messageId: undefined, messages: user(prompt), abortSignal: undefined });
  out = { message: summary(await assemble(stream)), errors };
} else if (scenario === 'drop') {
  const [chatId, prompt, n] = args;
  const abort = new AbortController();
  const stream = await transport.sendMessages({ chatId, trigger: 'submit-message', messageId: undefined, messages: user(prompt), abortSignal: abort.signal });
  const reader = stream.getReader();
  const seen = [];
  for (let i = 0; i < Number(n); i++) {
    const { value, done } = await reader.read();
    if (done) break;
    seen.push(value.type);
  }
  abort.abort();
  await reader.cancel().catch(() => {});
  const resumed = await transport.reconnectToStream({ chatId });
  out = { seen, resumed: resumed ? summary(await assemble(resumed)) : null, errors };
} else if (scenario === 'resume') {
  const [chatId] = args;
  try {
    const resumed = await transport.reconnectToStream({ chatId });
    out = { resumed: resumed ? summary(await assemble(resumed)) : null, errors };
  } catch (e) {
    out = { error: String(e?.message ?? e) };
  }
}
console.log(JSON.stringify(out));
