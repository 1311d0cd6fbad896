import assert from "node:assert/strict";
import { EventEmitter as NodeEmitter } from "node:events";
import { describe, it } from "node:test";
import { EventEmitter } from "eventemitter3";
import { createServer, PointSubError } from "../../src/index.ts";
import { Emitter } from "../../src/util/emitter.ts";

interface Events {
  a: [n: number];
  b: [];
}

/** The same script on both emitters, with what each listener saw. */
function script(e: Emitter<Events> | EventEmitter<Events>): unknown[] {
  const log: unknown[] = [];
  const ctx = { name: "ctx" };
  const one = (n: number) => log.push(["one", n]);
  const two = function (this: unknown, n: number) {
    log.push(["two", n, this === ctx]);
  };
  const own = function (this: unknown) {
    log.push(["own-this", this === e]);
  };
  log.push(["emit none", e.emit("a", 0)]);
  e.on("a", one);
  e.once("a", (n) => log.push(["once", n]));
  e.on("a", two, ctx);
  e.addListener("b", own);
  log.push(["names", e.eventNames()]);
  log.push(["count", e.listenerCount("a"), e.listeners("a").length]);
  log.push(["emit", e.emit("a", 1)]);
  e.emit("a", 2);
  e.emit("b");
  e.removeListener("a", two, { other: true });
  e.emit("a", 3);
  e.off("a", two, ctx);
  e.emit("a", 4);
  // A listener that removes itself and adds another while an emit runs: this round is unchanged.
  const self = () => {
    log.push(["self"]);
    e.off("a", self);
    e.on("a", () => log.push(["late"]));
  };
  e.on("a", self);
  e.emit("a", 5);
  e.emit("a", 6);
  e.removeAllListeners("a");
  log.push(["after removeAll a", e.emit("a", 7), e.listenerCount("b")]);
  e.removeAllListeners();
  log.push(["after removeAll", e.emit("b"), e.eventNames()]);
  // once filter: only once-listeners of fn go.
  e.on("a", one);
  e.once("a", one);
  e.removeListener("a", one, undefined, true);
  e.emit("a", 8);
  return log;
}

/** A lone listener (kept bare: no list, no entry) through every call that reads or changes it. */
function loneScript(e: Emitter<Events> | EventEmitter<Events>): unknown[] {
  const log: unknown[] = [];
  const ctx = { name: "ctx" };
  const lone = function (this: unknown, n: number) {
    log.push(["lone", n, this === e]);
  };
  e.on("a", lone);
  log.push(["count", e.listenerCount("a"), e.listeners("a").length, e.listeners("a")[0] === lone, e.eventNames()]);
  log.push(["emit", e.emit("a", 1)]);
  e.off("a", lone, ctx);
  e.off("a", lone, undefined, true);
  log.push(["kept by filters", e.emit("a", 2), e.listenerCount("a")]);
  e.off("a", lone, e);
  log.push(["off with the emitter as context", e.emit("a", 3), e.listenerCount("a"), e.eventNames()]);
  e.on("a", lone);
  e.on("a", (n) => log.push(["second", n]));
  e.emit("a", 4);
  e.off("a", lone);
  e.emit("a", 5);
  e.removeAllListeners("a");
  e.on("a", lone);
  e.on("a", lone);
  log.push(["twice", e.listenerCount("a")]);
  e.emit("a", 6);
  e.off("a", lone);
  log.push(["both off", e.emit("a", 7)]);
  // A lone listener that removes itself and adds another while it runs.
  const self = () => {
    log.push(["self"]);
    e.off("a", self);
    e.on("a", lone);
  };
  e.on("a", self);
  e.emit("a", 8);
  e.emit("a", 9);
  e.on("b", () => {
    throw new Error("lone bug");
  });
  try {
    e.emit("b");
  } catch (err) {
    log.push(["thrown", (err as Error).message]);
  }
  return log;
}

describe("Emitter", () => {
  it("a lone listener behaves as eventemitter3's (its context, filters, a second one, changes while it runs)", () => {
    const ours = loneScript(new Emitter<Events>());
    assert.deepEqual(ours, loneScript(new EventEmitter<Events>()));
    assert.ok(ours.length > 12);
  });

  it("behaves as eventemitter3 (order, once, context, removal filters, changes during an emit)", () => {
    const ours = script(new Emitter<Events>());
    assert.deepEqual(ours, script(new EventEmitter<Events>()));
    assert.ok(ours.length > 15);
  });

  it("a listener that throws: every listener runs (once ones removed), then the first error is thrown, a later one dropped", () => {
    // eventemitter3 stops at the throwing listener; pointsub's own cleanup listeners came after the application's.
    const e = new Emitter<Events>();
    const ran: string[] = [];
    e.on("a", () => {
      ran.push("first");
      throw new Error("first bug");
    });
    e.once("a", () => ran.push("once"));
    e.on("a", () => {
      ran.push("second");
      throw new Error("second bug");
    });
    e.on("a", () => ran.push("last"));
    assert.throws(() => e.emit("a", 1), { message: "first bug" });
    assert.deepEqual(ran, ["first", "once", "second", "last"]);
    assert.equal(e.listenerCount("a"), 3);
  });

  it("a falsy context or once filter filters nothing, as eventemitter3's (off(event, fn, null) removes fn)", () => {
    const run = (e: Emitter<Events> | EventEmitter<Events>): unknown[] => {
      const log: unknown[] = [];
      const f = function (this: unknown) {
        log.push(["f", this === e]);
      };
      // Added with a null context (`this` is the emitter), removed with one: gone.
      e.on("a", f, null);
      e.emit("a", 1);
      e.off("a", f, null);
      log.push(["after off null", e.listenerCount("a")]);
      // A falsy context is no context: `this` is the emitter.
      e.on("a", f, 0);
      e.emit("a", 2);
      e.removeListener("a", f, 0);
      log.push(["after off 0", e.listenerCount("a")]);
      // A truthy once filter removes the once listener of fn only.
      e.on("a", f);
      e.once("a", f);
      e.off("a", f, undefined, 1 as unknown as boolean);
      log.push(["after off once 1", e.listenerCount("a")]);
      return log;
    };
    const ours = run(new Emitter<Events>());
    assert.deepEqual(ours, run(new EventEmitter<Events>()));
    assert.deepEqual(ours, [
      ["f", true],
      ["after off null", 0],
      ["f", true],
      ["after off 0", 0],
      ["after off once 1", 1],
    ]);
  });

  it("a server's listener added and removed with a null context is gone", () => {
    const server = createServer();
    let heard = 0;
    const onReject = () => heard++;
    server.on("reject", onReject, null);
    server.off("reject", onReject, null);
    assert.equal(server.listenerCount("reject"), 0);
    assert.equal(server.emit("reject", new PointSubError("ERR_PROTOCOL", "x")), false);
    assert.equal(heard, 0);
  });

  it("listeners changed while an emit runs: the round keeps its listeners, as eventemitter3's and node:events'", () => {
    // Run on each as an Emitter: the three share these methods (node:events has no context argument).
    const run = (e: Emitter<Events>): string[] => {
      const log: string[] = [];
      // One that removes a later one: that one still hears this round, not the next.
      const later = () => log.push("later");
      e.on("a", () => {
        log.push("remover");
        e.off("a", later);
      });
      e.on("a", later);
      e.emit("a", 1);
      e.emit("a", 2);
      e.removeAllListeners();
      // One that removes every listener: the rest of the round still runs.
      e.on("a", () => {
        log.push("clearer");
        e.removeAllListeners();
      });
      e.on("a", () => log.push("after clear"));
      e.emit("a", 3);
      log.push(`left ${e.listenerCount("a")}`);
      // A once listener that adds itself again: once per emit, never twice in one.
      const again = () => {
        log.push("again");
        e.once("a", again);
      };
      e.once("a", again);
      e.emit("a", 4);
      e.emit("a", 5);
      log.push(`left ${e.listenerCount("a")}`);
      e.removeAllListeners();
      // A once listener, a throwing one, a once one: both once listeners gone after the round.
      e.once("a", () => log.push("once 1"));
      e.on("a", () => {
        throw new Error("bug");
      });
      e.once("a", () => log.push("once 2"));
      try {
        e.emit("a", 6);
      } catch {
        log.push("thrown");
      }
      log.push(`left ${e.listenerCount("a")}`);
      return log;
    };
    const ours = run(new Emitter<Events>());
    const theirs = run(new EventEmitter<Events>() as unknown as Emitter<Events>);
    assert.deepEqual(run(new NodeEmitter() as unknown as Emitter<Events>), theirs);
    // eventemitter3 stops at the throwing listener: its "once 2" neither ran nor went.
    assert.deepEqual(theirs.slice(-3), ["once 1", "thrown", "left 2"]);
    assert.deepEqual(ours.slice(0, -4), theirs.slice(0, -3));
    assert.deepEqual(ours, [
      "remover",
      "later",
      "remover",
      "clearer",
      "after clear",
      "left 0",
      "again",
      "again",
      "left 1",
      "once 1",
      "once 2",
      "thrown",
      "left 1",
    ]);
  });

  it("a once listener runs once when a listener before it emits the same event again (as node:events')", () => {
    const run = (e: Emitter<Events>): number => {
      let ran = 0;
      let depth = 0;
      // The first listener emits again (a session's close that closes another, …): the once one runs in
      // that inner round, and is not run again by the outer round, which still holds it.
      e.on("a", () => {
        if (depth++ === 0) e.emit("a", 2);
      });
      e.once("a", () => ran++);
      e.emit("a", 1);
      e.emit("a", 3);
      return ran;
    };
    assert.equal(run(new NodeEmitter() as unknown as Emitter<Events>), 1);
    // (eventemitter3 runs it twice.)
    assert.equal(run(new Emitter<Events>()), 1);
  });

  it("refuses a listener that is not a function", () => {
    assert.throws(() => new Emitter<Events>().on("a", 1 as unknown as () => void), TypeError);
  });
});
