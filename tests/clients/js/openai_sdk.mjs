// Drives an OpenAI-compatible endpoint with the official `openai` Node SDK and prints what the
// SDK saw, as JSON, for the integration tests (tests/suites/openai.rs) to check.
//   node openai_sdk.mjs BASE_URL PROMPT
import OpenAI from 'openai';

const [base, prompt] = process.argv.slice(2);
const client = new OpenAI({ baseURL: base, apiKey: 'test-key', maxRetries: 0, timeout: 60_000 });
const messages = [{ role: 'user', content: prompt }];
const out = {};

out.models = [];
for await (const model of client.models.list()) out.models.push(model.id);

const { data, response } = await client.chat.completions
  .create({ model: 'default', messages })
  .withResponse();
out.create = {
  content: data.choices[0].message.content,
  finish_reason: data.choices[0].finish_reason,
  usage: data.usage,
  request_id: response.headers.get('x-request-id'),
  agent: response.headers.get('x-agent'),
};

const stream = await client.chat.completions.create({
  model: 'default',
  messages,
  stream: true,
  stream_options: { include_usage: true },
});
let text = '';
let usage = null;
const finishes = [];
for await (const chunk of stream) {
  for (const choice of chunk.choices) {
    text += choice.delta?.content ?? '';
    if (choice.finish_reason) finishes.push(choice.finish_reason);
  }
  if (chunk.usage) usage = chunk.usage;
}
out.stream = { content: text, finish_reasons: finishes, usage };

try {
  await client.chat.completions.create({ model: 'no-such-agent', messages });
  out.unknown_model = null;
} catch (e) {
  out.unknown_model = { class: e.constructor.name, status: e.status, code: e.code, type: e.type };
}
console.log(JSON.stringify(out));
