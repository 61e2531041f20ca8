// Against the live daemon OMG_HOST names (tests/e2e/test_clients.py starts one serving SmolLM2
// as OMG_TEST_MODEL, with the fake hub holding OMG_TEST_PULL_REPO): every call a client makes
// most, through the generated code and the wrapper.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Code, ConnectError, EventKind, JobState, connect, target } from "../src/index.js";

const MODEL = process.env.OMG_TEST_MODEL ?? "smollm2";
const PULL_REPO = process.env.OMG_TEST_PULL_REPO ?? "";
const omg = connect();

test("OMG_HOST forms", () => {
  assert.deepEqual(target("127.0.0.1:9"), { baseUrl: "http://127.0.0.1:9", tls: false });
  assert.deepEqual(target("box"), { baseUrl: "http://box:11435", tls: false });
  assert.deepEqual(target("grpcs://box:1/"), { baseUrl: "https://box:1", tls: true });
  assert.deepEqual(target("[::1]", "/ca.pem"), { baseUrl: "https://[::1]:11435", tls: true });
  assert.throws(() => target("ftp://box"), /OMG_HOST/);
});

test("list models", async () => {
  const { models } = await omg.models.listModels({});
  const mine = models.find((m) => m.name === MODEL);
  assert.ok(mine, `${MODEL} in ${models.map((m) => m.name)}`);
  assert.ok(mine.artifacts.length > 0 && mine.artifacts[0].size > 0n, "sizes are bigints (uint64)");
});

test("stream a chat and read every delta", async () => {
  const deltas: string[] = [];
  let finish = 0;
  let completion = 0;
  for await (const r of omg.chat.chat({
    model: MODEL,
    messages: [{ role: "user", content: "Count from one to five." }],
    params: { maxTokens: 12, temperature: 0 },
  })) {
    deltas.push(r.content);
    if (r.finishReason) finish = r.finishReason;
    if (r.usage) completion = r.usage.completionTokens;
  }
  assert.ok(deltas.length > 2, `several deltas, got ${deltas.length}`);
  assert.ok(deltas.join("").trim().length > 0, "some text");
  assert.ok(finish > 0, "a finish reason on the last message");
  assert.ok(completion > 0 && completion <= 12, `usage ${completion}`);
});

test("start a pull and follow its progress, then read the event stream", { skip: !PULL_REPO }, async () => {
  const job = await omg.models.installModel({ source: PULL_REPO, name: "ts-pulled" });
  assert.ok(job.id);
  const states: JobState[] = [];
  let last = job;
  for await (const j of omg.jobs.watchJob({ id: job.id })) {
    states.push(j.state);
    last = j;
  }
  assert.equal(last.state, JobState.DONE, `ended ${JobState[last.state]}: ${last.error}`);
  assert.ok(last.totalBytes > 0n && last.completedBytes === last.totalBytes, "bytes done");
  const record = await omg.models.getModel({ name: "ts-pulled" });
  assert.equal(record.name, "ts-pulled");

  // The history holds the pull's download events; stop reading once one is seen.
  const abort = new AbortController();
  const seen: EventKind[] = [];
  try {
    for await (const e of omg.events.streamEvents({ afterId: 0n, kinds: [EventKind.DOWNLOAD] },
      { signal: abort.signal, timeoutMs: 10_000 })) {
      seen.push(e.kind);
      assert.ok(e.id > 0n && e.time, "ids and times");
      if (seen.length >= 1) abort.abort();
    }
  } catch (e) {
    if (!(e instanceof ConnectError && e.code === Code.Canceled)) throw e;
  }
  assert.deepEqual([...new Set(seen)], [EventKind.DOWNLOAD]);
});

test("a clear gRPC status for an unknown model", async () => {
  await assert.rejects(omg.models.getModel({ name: "no-such-model" }), (e: unknown) => {
    assert.ok(e instanceof ConnectError);
    assert.equal(e.code, Code.NotFound);
    assert.match(e.rawMessage, /no-such-model/);
    return true;
  });
  // ... and on a stream, before any message.
  await assert.rejects(async () => {
    for await (const _ of omg.chat.chat({ model: "no-such-model", messages: [{ role: "user", content: "hi" }] })) {
      // nothing comes
    }
  }, (e: unknown) => e instanceof ConnectError && e.code === Code.NotFound);
});
