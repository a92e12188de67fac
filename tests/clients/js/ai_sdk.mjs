// Drives an OpenAI-compatible endpoint with the Vercel AI SDK (`ai`) and its
// `@ai-sdk/openai-compatible` provider and prints what it saw, as JSON, for the integration
// tests (tests/suites/openai.rs) to check.
//   node ai_sdk.mjs BASE_URL PROMPT
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { generateText, streamText } from 'ai';

const [base, prompt] = process.argv.slice(2);
const agents = createOpenAICompatible({ name: 'agents', baseURL: base, apiKey: 'test-key', includeUsage: true });
const out = {};

const generated = await generateText({ model: agents('default'), prompt, maxRetries: 0 });
out.generate = {
  text: generated.text,
  finish_reason: generated.finishReason,
  input_tokens: generated.usage.inputTokens ?? null,
  output_tokens: generated.usage.outputTokens ?? null,
  model: generated.response.modelId,
};

const errors = [];
const streamed = streamText({
  model: agents('default'),
  system: 'Answer briefly.',
  messages: [{ role: 'user', content: prompt }],
  maxRetries: 0,
  onError: ({ error }) => errors.push(String(error?.message ?? error)),
});
const parts = [];
for await (const part of streamed.fullStream) parts.push(part.type);
out.stream = {
  text: await streamed.text,
  finish_reason: await streamed.finishReason,
  total_tokens: (await streamed.usage).totalTokens ?? null,
  errors,
  parts: [...new Set(parts)],
};

try {
  await generateText({ model: agents('no-such-agent'), prompt, maxRetries: 0 });
  out.unknown_model = null;
} catch (e) {
  out.unknown_model = { name: e.name, status: e.statusCode, message: e.message };
}
console.log(JSON.stringify(out));
