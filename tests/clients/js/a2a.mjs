// Drives an A2A 1.0 server with the official JS client (@a2a-js/sdk) and prints what it saw,
// as JSON, for the integration tests (tests/suites/a2a.rs) to check.
//   node a2a.mjs BASE_URL PROMPT       (BASE_URL: the A2A endpoint; A2A_TOKEN: a bearer token)
import { randomUUID } from 'node:crypto';
import { Role, TaskState } from '@a2a-js/sdk';
import { ClientFactory, ClientFactoryOptions, DefaultAgentCardResolver, JsonRpcTransportFactory } from '@a2a-js/sdk/client';

const [base, prompt] = process.argv.slice(2);
const token = process.env.A2A_TOKEN;
const authFetch = (url, init = {}) => {
  const headers = new Headers(init.headers);
  if (token) headers.set('Authorization', `Bearer ${token}`);
  return fetch(url, { ...init, headers });
};
const factory = new ClientFactory(ClientFactoryOptions.createFrom(ClientFactoryOptions.default, {
  transports: [new JsonRpcTransportFactory({ fetchImpl: authFetch })],
  cardResolver: new DefaultAgentCardResolver({ fetchImpl: authFetch }),
  preferredTransports: ['JSONRPC'],
}));
const client = await factory.createFromUrl(base);
const message = (text) => ({ messageId: randomUUID(), role: Role.ROLE_USER, parts: [{ content: { $case: 'text', value: text } }] });
const stateName = (s) => TaskState[s] ?? s;
const text = (task) => (task.artifacts ?? []).flatMap((a) => a.parts).map((p) => p.content?.value ?? '').join('');

const out = { card: client.agentCard.name };
const task = await client.sendMessage({ message: message(prompt) });
out.send = { id: task.id, state: stateName(task.status.state), text: text(task), context: task.contextId };

const kinds = [];
let streamed = '';
let last = null;
for await (const ev of client.sendMessageStream({ message: message(prompt) })) {
  kinds.push(ev.payload.$case);
  if (ev.payload.$case === 'artifactUpdate') {
    const piece = ev.payload.value.artifact.parts.map((p) => p.content?.value ?? '').join('');
    streamed = ev.payload.value.append ? streamed + piece : piece;
  }
  if (ev.payload.$case === 'statusUpdate') last = stateName(ev.payload.value.status.state);
}
out.stream = { kinds, text: streamed, state: last };
console.log(JSON.stringify(out));
