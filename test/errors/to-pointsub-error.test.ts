/**
 * `toPointSubError` turns whatever was thrown into a PointSubError, and
 * never throws itself: callers use it where a throw would leave a call
 * unsettled or end the process (a transport's failure, a source's throw).
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { PointSubError, toPointSubError } from "../../src/errors/error.ts";

it("toPointSubError never throws: values String cannot convert, throwing getters, Symbol messages", () => {
  const nullProto = Object.create(null);
  const getter = new Error("x");
  Object.defineProperty(getter, "message", {
    get() {
      throw new Error("no");
    },
  });
  const symbolMessage = new Error("x");
  Object.defineProperty(symbolMessage, "message", { value: Symbol("s") });
  const throwingToString = {
    toString() {
      throw new Error("no");
    },
  };
  const revoked = Proxy.revocable({}, {});
  revoked.revoke();
  for (const v of [nullProto, getter, symbolMessage, throwingToString, Symbol("bare"), revoked.proxy]) {
    const e = toPointSubError(v, "ERR_SOURCE", "source: ");
    assert.ok(e instanceof PointSubError);
    assert.equal(e.code, "ERR_SOURCE");
    assert.ok(e.message.startsWith("source: "));
    assert.equal(e.cause, v);
  }
  assert.equal(toPointSubError(nullProto, "ERR_SOURCE").message, "object");
  assert.equal(toPointSubError(new Error("plain"), "ERR_SOURCE", "p: ").message, "p: plain");
});
