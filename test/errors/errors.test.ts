import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { codeForErrno, codeInfo, ERROR_CODES } from "../../src/errors/codes.ts";
import { isPointSubError, PointSubError, withSuggestion } from "../../src/errors/error.ts";
import { SUGGESTIONS } from "../../src/errors/suggestions.ts";

describe("PointSubError", () => {
  it("loads the suggestion texts on demand: an error built before they arrive names its code, withSuggestion completes it", async () => {
    // First in this file: nothing installed the texts yet (a browser before its first connection).
    const early = new PointSubError("ERR_CONNECT", "refused");
    assert.match(early.suggestion, /ERR_CONNECT/);
    const own = new PointSubError("ERR_CONNECT", "refused", { suggestion: "mine" });
    assert.equal(await withSuggestion(early), early);
    assert.equal(early.suggestion, SUGGESTIONS.ERR_CONNECT);
    assert.equal((await withSuggestion(own)).suggestion, "mine");
    assert.equal(new PointSubError("ERR_CONNECT", "x").suggestion, SUGGESTIONS.ERR_CONNECT);
    assert.equal(codeInfo("ERR_TIMEOUT").suggestion, SUGGESTIONS.ERR_TIMEOUT);
  });

  it("carries code, errno, severity, retryable, suggestion and cause", () => {
    const cause = new Error("socket hang up");
    const e = new PointSubError("ERR_CONNECTION_CLOSED", "gone", { cause });
    assert.equal(e.code, "ERR_CONNECTION_CLOSED");
    assert.equal(e.errno, 1002);
    assert.equal(e.severity, "error");
    assert.equal(e.retryable, true);
    assert.match(e.suggestion, /reconnect/);
    assert.equal(e.cause, cause);
    assert.equal(e.name, "PointSubError");
    assert.ok(e instanceof Error);
    assert.ok(isPointSubError(e, "ERR_CONNECTION_CLOSED"));
    assert.ok(!isPointSubError(e, "ERR_TIMEOUT"));
    assert.ok(!isPointSubError(new Error("x")));
  });

  it("fromPeer builds a full error without a stack trace; the constructor keeps the stack", () => {
    const limit = Error.stackTraceLimit;
    const cause = new Error("inner");
    const e = PointSubError.fromPeer("ERR_PROTOCOL", "bad resume query", { cause, suggestion: "s" });
    assert.equal(Error.stackTraceLimit, limit, "stackTraceLimit restored");
    assert.ok(e instanceof PointSubError);
    assert.ok(e instanceof Error);
    assert.ok(isPointSubError(e, "ERR_PROTOCOL"));
    assert.equal(e.code, "ERR_PROTOCOL");
    assert.equal(e.errno, codeInfo("ERR_PROTOCOL").errno);
    assert.equal(e.severity, codeInfo("ERR_PROTOCOL").severity);
    assert.equal(e.retryable, codeInfo("ERR_PROTOCOL").retryable);
    assert.equal(e.suggestion, "s");
    assert.equal(e.message, "bad resume query");
    assert.equal(e.name, "PointSubError");
    assert.equal(e.cause, cause);
    assert.equal(e.stack, "PointSubError: bad resume query");
    assert.equal(String(e), "PointSubError: bad resume query");
    assert.equal(PointSubError.fromPeer("ERR_CANCELLED", "x").suggestion, codeInfo("ERR_CANCELLED").suggestion);

    const normal = (function appCaller() {
      return new PointSubError("ERR_INVALID_ARGUMENT", "app mistake");
    })();
    assert.match(normal.stack ?? "", /^PointSubError: app mistake\n\s+at /);
    assert.match(normal.stack ?? "", /appCaller/);
  });

  it("fromPeer restores stackTraceLimit even when construction throws", () => {
    const limit = Error.stackTraceLimit;
    assert.throws(() => PointSubError.fromPeer("ERR_NOT_A_CODE" as "ERR_PROTOCOL", "x"));
    assert.equal(Error.stackTraceLimit, limit);
  });

  it("a code not in ERROR_CODES is refused with ERR_INVALID_ARGUMENT naming it (a raw TypeError before), as fromPeer", () => {
    for (const make of [
      () => new PointSubError("ERR_MINE" as "ERR_PROTOCOL", "x"),
      () => PointSubError.fromPeer("ERR_MINE" as "ERR_PROTOCOL", "x"),
      () => new PointSubError("toString" as "ERR_PROTOCOL", "x"),
    ]) {
      assert.throws(make, (e: unknown) => {
        assert.ok(isPointSubError(e, "ERR_INVALID_ARGUMENT"), String(e));
        assert.match(e.message, /invalid code (ERR_MINE|toString)/);
        return true;
      });
    }
  });

  it("instanceof works across two loaded copies of the module", async () => {
    const copy = (await import(
      `../../src/errors/error.ts?copy=${Date.now()}`
    )) as typeof import("../../src/errors/error.ts");
    assert.notEqual(copy.PointSubError, PointSubError);
    const foreign = new copy.PointSubError("ERR_TIMEOUT", "from the other copy");
    assert.ok(foreign instanceof PointSubError);
    assert.ok(new PointSubError("ERR_TIMEOUT", "x") instanceof copy.PointSubError);
    assert.ok(!({ code: "ERR_TIMEOUT" } instanceof PointSubError));
  });

  it("has the required codes, errno ranges by category, unique errnos and a suggestion each", () => {
    for (const c of [
      "ERR_TIMEOUT",
      "ERR_CANCELLED",
      "ERR_CONNECTION_CLOSED",
      "ERR_NO_ROUTE",
      "ERR_HANDLER",
      "ERR_MESSAGE_TOO_LARGE",
      "ERR_CHECKSUM",
      "ERR_PROTOCOL",
    ] as const) {
      assert.ok(ERROR_CODES.includes(c), c);
    }
    const seen = new Set<number>();
    for (const c of ERROR_CODES) {
      const info = codeInfo(c);
      assert.ok(info.errno >= 1000 && info.errno < 5000, c);
      assert.ok(!seen.has(info.errno), `duplicate errno ${info.errno}`);
      seen.add(info.errno);
      assert.ok(info.suggestion.length > 20, c);
      assert.equal(codeForErrno(info.errno), c);
    }
    assert.equal(Math.floor(codeInfo("ERR_CHECKSUM").errno / 1000), 3);
    assert.equal(Math.floor(codeInfo("ERR_NO_ROUTE").errno / 1000), 4);
    assert.equal(Math.floor(codeInfo("ERR_FLOW_CONTROL").errno / 1000), 2);
    assert.equal(Math.floor(codeInfo("ERR_TIMEOUT").errno / 1000), 1);
  });

  it("an unsupported URL's suggestion points at the runtime's transports, not at schemes it may lack", async () => {
    // It said "Use one of the supported schemes: tcp://, tls://, unix://." also where there is none of
    // them (a browser: ws:// and wss:// only; a runtime of one's own) and left out ws://, wss://, lp+….
    const { connect, createRuntime, memoryTransport } = await import("../../src/index.ts");
    const runtime = createRuntime({ transports: [memoryTransport()] });
    await assert.rejects(connect("tcp://127.0.0.1:1", { runtime }), (e: PointSubError) => {
      assert.equal(e.code, "ERR_UNSUPPORTED_URL");
      assert.match(e.message, /have memory:\/\//);
      assert.doesNotMatch(e.suggestion, /tcp:\/\//);
      assert.match(e.suggestion, /transport/);
      return true;
    });
  });
});
