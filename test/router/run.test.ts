/**
 * Router.run (src/router/router.ts): the chain's value comes back at once
 * when no step was asynchronous, a promise otherwise, and errors always as
 * a rejected promise — never a synchronous throw.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { HandlerResult } from "../../src/connection/types.ts";
import { PointSubError } from "../../src/errors/error.ts";
import { Router } from "../../src/router/router.ts";
import type { CallContext, Middleware } from "../../src/router/types.ts";

// The chain only hands the context along: a plain object stands in for one.
const ctx = { kind: "request", route: "/r/1" } as unknown as CallContext;

const chainOf = (...mws: Middleware[]): Router => {
  const r = new Router();
  for (const mw of mws) r.use(mw);
  return r;
};

const passThrough: Middleware = (_ctx, next) => next();

describe("router: run", () => {
  it("returns the value itself when every middleware hands back next()'s promise and the endpoint is synchronous", () => {
    const r = chainOf(passThrough, passThrough);
    assert.equal(
      r.run(ctx, () => "answer"),
      "answer",
    );
    // A child router's chain (server middleware outermost) too.
    const child = new Router(r).use(passThrough);
    assert.equal(
      child.run(ctx, () => 7 as unknown as HandlerResult),
      7,
    );
    // A middleware answering by itself at once.
    assert.equal(
      chainOf(passThrough, () => "cached").run(ctx, () => "never"),
      "cached",
    );
    assert.equal(
      chainOf(() => undefined).run(ctx, () => "never"),
      undefined,
    );
  });

  it("returns a promise as soon as one step is asynchronous, with the same value", async () => {
    const awaiting: Middleware = async (_ctx, next) => await next();
    const p1 = chainOf(passThrough, awaiting).run(ctx, () => "a");
    assert.ok(p1 instanceof Promise);
    assert.equal(await p1, "a");
    const p2 = chainOf(passThrough).run(ctx, async () => "b");
    assert.ok(p2 instanceof Promise);
    assert.equal(await p2, "b");
    // A middleware that returns a promise of its own (not next()'s) changes the value.
    const mapping: Middleware = (_ctx, next) => next().then((v) => `${String(v)}!`);
    const p3 = chainOf(mapping, passThrough).run(ctx, () => "c");
    assert.ok(p3 instanceof Promise);
    assert.equal(await p3, "c!");
    // A thenable that is not a Promise is adopted.
    // biome-ignore lint/suspicious/noThenProperty: a foreign thenable is the case under test
    const thenable = { then: (ok: (v: HandlerResult) => void) => ok("d") } as unknown as Promise<HandlerResult>;
    assert.equal(await chainOf(passThrough).run(ctx, () => thenable), "d");
  });

  it("a throw anywhere (middleware or endpoint, synchronous or not) is a rejected promise, not a throw", async () => {
    const refuse: Middleware = () => {
      throw new PointSubError("ERR_UNAUTHORIZED", "no");
    };
    const r1 = chainOf(passThrough, refuse).run(ctx, () => "x");
    assert.ok(r1 instanceof Promise);
    await assert.rejects(r1 as Promise<HandlerResult>, { code: "ERR_UNAUTHORIZED" });
    const r2 = chainOf(passThrough).run(ctx, () => {
      throw new Error("handler failed");
    });
    await assert.rejects(r2 as Promise<HandlerResult>, /handler failed/);
    const twice: Middleware = (_ctx, next) => {
      void next();
      return next();
    };
    await assert.rejects(chainOf(twice).run(ctx, () => "x") as Promise<HandlerResult>, {
      code: "ERR_INVALID_ARGUMENT",
      message: /more than once/,
    });
  });
});
