// Talks to an octet daemon with the official openai package and prints one
// JSON object with what it saw. Run by TestOpenAINodeClient; the package is
// found through NODE_PATH (.ci/setup.d/daemon.sh installs it in .cache/node).
const { OpenAI } = require("openai");

async function main() {
  const client = new OpenAI({
    baseURL: process.env.OCTET_URL + "/v1",
    apiKey: process.env.OCTET_KEY || "none",
    maxRetries: 0,
  });
  const model = process.env.OCTET_MODEL;
  const messages = [{ role: "user", content: "Once upon a time" }];
  const out = {};

  const list = await client.models.list();
  out.models = list.data.map((m) => m.id);

  const r = await client.chat.completions.create({
    model, messages, max_tokens: 16, temperature: 0, seed: 1, logprobs: true, top_logprobs: 2,
  });
  const lp = r.choices[0].logprobs;
  out.chat = {
    content: r.choices[0].message.content, role: r.choices[0].message.role, finish: r.choices[0].finish_reason, usage: r.usage,
    logprobs: lp ? lp.content.length : -1, top: lp ? lp.content[0].top_logprobs.length : -1,
  };

  const stream = await client.chat.completions.create({
    model, messages, max_tokens: 16, temperature: 0, seed: 1, stream: true, stream_options: { include_usage: true },
  });
  const s = { content: "", finish: null, usage: null, chunks: 0, role: null };
  for await (const c of stream) {
    s.chunks++;
    if (c.choices.length > 0) {
      const d = c.choices[0].delta;
      if (d.role) s.role = d.role;
      s.content += d.content || "";
      if (c.choices[0].finish_reason) s.finish = c.choices[0].finish_reason;
    }
    if (c.usage) s.usage = c.usage;
  }
  out.stream = s;

  // JSON mode: answers that end "stop" parse as one object (the test's
  // logit_bias helps the tiny model close its strings and objects).
  const js = { closed: 0, parsed: 0, cut: 0, bad: [] };
  for (let seed = 1; seed <= 6; seed++) {
    const j = await client.chat.completions.create({
      model, messages, max_tokens: 120, temperature: 0.8, seed, response_format: { type: "json_object" },
      logit_bias: JSON.parse(process.env.OCTET_JSON_BIAS || "{}"),
    });
    const c = j.choices[0];
    if (c.finish_reason === "stop") {
      js.closed++;
      try {
        const v = JSON.parse(c.message.content);
        if (v !== null && typeof v === "object" && !Array.isArray(v)) js.parsed++;
        else js.bad.push(c.message.content);
      } catch (e) {
        js.bad.push(c.message.content);
      }
    } else if (c.message.content.trimStart().startsWith("{")) {
      js.cut++;
    } else {
      js.bad.push(c.message.content);
    }
  }
  out.json = js;

  // Structured output: response_format json_schema, as the SDK sends it.
  const schema = {
    type: "object",
    properties: { name: { type: "string" }, count: { type: "integer" }, ok: { type: "boolean" } },
    required: ["name", "count", "ok"], additionalProperties: false,
  };
  const ss = { complete: 0, valid: 0, bad: [] };
  for (let seed = 1; seed <= 4; seed++) {
    const j = await client.chat.completions.create({
      model, messages, max_tokens: 120, temperature: 0.8, seed,
      response_format: { type: "json_schema", json_schema: { name: "thing", strict: true, schema } },
      logit_bias: JSON.parse(process.env.OCTET_JSON_BIAS || "{}"),
    });
    const c = j.choices[0];
    if (c.finish_reason !== "stop") continue;
    ss.complete++;
    try {
      const v = JSON.parse(c.message.content);
      const keys = Object.keys(v).join(",");
      if (keys === "name,count,ok" && typeof v.name === "string" && Number.isInteger(v.count) && typeof v.ok === "boolean") ss.valid++;
      else ss.bad.push(c.message.content);
    } catch (e) {
      ss.bad.push(c.message.content);
    }
  }
  out.schema = ss;

  const cr = await client.completions.create({ model, prompt: "Once upon a time", max_tokens: 8, temperature: 0 });
  out.completion = { text: cr.choices[0].text, finish: cr.choices[0].finish_reason };

  try {
    await client.chat.completions.create({ model: "no-such-model", messages });
    out.unknownModel = "no error";
  } catch (e) {
    out.unknownModel = { status: e.status, type: e.type || (e.error && e.error.type) };
  }
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
