/** Presets and the JSON form of options: every preset connects and takes effect; options round-trip through JSON. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  type Connection,
  connectResilient,
  createServer,
  optionsFromJSON,
  optionsToJSON,
  PointSubError,
  PRESETS,
  type PresetName,
  preset,
} from "../../src/index.ts";
import { until } from "../helpers/wait.ts";

describe("presets", () => {
  for (const name of Object.keys(PRESETS) as PresetName[]) {
    it(`${name}: connects, answers, and the server sees its settings`, async () => {
      const server = createServer();
      server.handle("/echo/1", (req) => req.data);
      let session: Connection | undefined;
      server.on("session", (s) => {
        session = s;
      });
      const [url] = await server.listen("tcp://127.0.0.1:0");
      const client = await connectResilient(url, preset(name));
      try {
        assert.equal(new TextDecoder().decode(await client.request("/echo/1", "hi")), "hi");
        await until(() => session !== undefined);
        const want = PRESETS[name].maxFrameSize ?? 1024 * 1024;
        assert.equal(session?.peerSettings.maxFrameSize, want);
      } finally {
        await client.close();
        await server.close();
      }
    });
  }

  it("low-latency fails calls at once while offline; default queues them", async () => {
    const server = createServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const fast = await connectResilient(url, preset("low-latency"));
    const patient = await connectResilient(url, preset("default", { offline: { maxAgeMs: 50 } }));
    try {
      await server.close();
      await until(() => fast.state === "reconnecting" && patient.state === "reconnecting");
      await assert.rejects(fast.send("x"), { code: "ERR_OFFLINE", message: /"fail"/ });
      await assert.rejects(patient.send("x"), { code: "ERR_OFFLINE", message: /maxAgeMs/ });
    } finally {
      await fast.close();
      await patient.close();
    }
  });

  it("overrides merge into a preset field by field (nested policies too); an unknown preset throws", () => {
    const o = preset("low-latency", { reconnect: { maxAttempts: 5 }, keepAliveMs: 3000 });
    assert.deepEqual(o.reconnect, { initialDelayMs: 20, maxDelayMs: 1000, maxAttempts: 5 });
    assert.equal(o.keepAliveMs, 3000);
    assert.equal(o.requestTimeoutMs, 5000);
    assert.throws(() => preset("fastest" as PresetName), { code: "ERR_INVALID_ARGUMENT" });
  });
});

describe("options as JSON", () => {
  it("every preset round-trips, Infinity included", () => {
    for (const name of Object.keys(PRESETS) as PresetName[]) {
      const o = preset(name, { reconnect: { maxAttempts: Number.POSITIVE_INFINITY } });
      assert.deepEqual(optionsFromJSON(optionsToJSON(o)), o, name);
    }
  });

  it("reconnect: false (never reconnect) round-trips; another plain value for a policy is refused", () => {
    // Before: refused on the way back, "option reconnect must be an object".
    const o = preset("default", { reconnect: false });
    assert.deepEqual(optionsFromJSON(optionsToJSON(o)), o);
    assert.throws(() => optionsFromJSON('{"reconnect":true}'), /reconnect must be an object or false/);
    assert.throws(() => optionsFromJSON('{"pool":false}'), /pool must be an object/);
  });

  it("every plain connection option round-trips (the list of known keys misses none)", () => {
    const o = {
      minProgressBytesPerSecond: 2048,
      minAnswerBytesPerSecond: 32768,
      idleTimeoutMs: 60_000,
      progressTimeoutMs: 30_000,
      slowPeerTimeoutMs: 10_000,
    };
    assert.deepEqual(optionsFromJSON(optionsToJSON(o)), o);
  });

  it("leaves out what JSON cannot hold or must not (runtime, signal, credentials, tls)", () => {
    const json = optionsToJSON({
      keepAliveMs: 1000,
      credentials: "secret-token",
      signal: new AbortController().signal,
      tls: { ca: "PEM" },
    } as Parameters<typeof optionsToJSON>[0]);
    assert.deepEqual(JSON.parse(json), { keepAliveMs: 1000 });
  });

  it("refuses unknown keys, wrong shapes and out-of-range values, naming the field", () => {
    assert.throws(() => optionsFromJSON('{"keepAliveMs": -1}'), /keepAliveMs must be >= 0/);
    assert.throws(() => optionsFromJSON('{"keepAlive": 1}'), /unknown option keepAlive/);
    assert.throws(() => optionsFromJSON('{"reconnect": 3}'), /reconnect must be an object/);
    assert.throws(() => optionsFromJSON("[1]"), /JSON object/);
    assert.throws(() => optionsFromJSON("{"), /not valid JSON/);
  });

  it("checks every field it takes: protocol limits, the client's own options and the nested policies (each of these was accepted)", () => {
    const refused: [string, RegExp][] = [
      ['{"maxFrameSize": 5}', /maxFrameSize/],
      ['{"streamWindow": 1.5}', /streamWindow/],
      ['{"checksum": "yes"}', /checksum must be a boolean/],
      ['{"pacing": 3}', /pacing must be a boolean/],
      ['{"connectTimeoutMs": -1}', /connectTimeoutMs must be >= 0/],
      ['{"retries": -1}', /retries must be a number >= 0/],
      ['{"rttProbeMs": -1}', /rttProbeMs must be a number >= 0/],
      ['{"reconnect": {"maxAttempts": -1}}', /reconnect\.maxAttempts must be a number >= 0/],
      ['{"reconnect": {"initialDelayMs": "x"}}', /reconnect\.initialDelayMs must be a number >= 0/],
      ['{"reconnect": {"bogus": 1}}', /unknown option reconnect\.bogus/],
      ['{"offline": {"policy": "nope"}}', /offline\.policy must be "queue" or "fail"/],
      ['{"offline": {"maxBytes": -5}}', /offline\.maxBytes must be a number >= 0/],
      ['{"pool": {"maxPerNode": 0}}', /pool\.maxPerNode must be an integer >= 1/],
      ['{"pool": {"maxInFlight": 1.5}}', /pool\.maxInFlight must be an integer >= 1/],
      ['{"breaker": {"cooldownMs": -1}}', /breaker\.cooldownMs must be a number >= 0/],
    ];
    for (const [json, message] of refused) {
      assert.throws(
        () => optionsFromJSON(json),
        (e: unknown) => e instanceof PointSubError && e.code === "ERR_INVALID_ARGUMENT" && message.test(e.message),
        json,
      );
    }
    // What the checks allow still loads: Infinity attempts, 0 delays, the presets.
    const ok = {
      reconnect: { maxAttempts: Infinity, initialDelayMs: 0 },
      offline: { policy: "fail" as const },
      retries: 0,
    };
    assert.deepEqual(optionsFromJSON(optionsToJSON(ok)), ok);
  });
});
