/**
 * A small typed event emitter with the API of `eventemitter3`: `on`/
 * `addListener`, `once`, `off`/`removeListener` (with its `context` and
 * `once` filters), `removeAllListeners`, `emit`, `listeners`,
 * `listenerCount`, `eventNames`; listeners run in the order they were
 * added, with the `context` given as `this`. Unlike `eventemitter3`'s, its
 * `emit` runs every listener when one throws, then throws the first error.
 * Connections and transfer progress extend it, so it is part of every
 * browser page's first load (about a third of `eventemitter3`'s size); the
 * servers, lp connections, resilient clients, cluster and worker pool too.
 */

/** Event names to the arguments of their listeners (`{ close: [error?: Error] }`). */
export type EventMap<T> = { [K in keyof T]: unknown[] };

/** A listener of event `K`. */
export type Listener<T extends EventMap<T>, K extends keyof T> = (...args: T[K]) => void;

interface Entry {
  readonly fn: unknown;
  readonly context: unknown;
  /** 2: a `once` listener that ran (an emit of the same event from a listener before it ran it already). */
  once: boolean | 2;
}

/**
 * Listener lists by event name. A lone listener added with neither a
 * `context` nor `once` is kept as the function itself (an array and an entry
 * cost 104 B more: a server session's `on("message")` on every connection).
 */
type Lists = Record<PropertyKey, Entry[] | Bare | undefined>;
type Bare = (...a: unknown[]) => void;
/**
 * The prototype of the objects that hold the lists: nothing to inherit (an
 * event may be called "constructor"). Kept as `eventemitter3` keeps them:
 * an object of a few properties (fast, unlike one made with
 * `Object.create(null)`) is about a third of a `Map`'s size — an emitter
 * per connection, most with a listener or two.
 */
const LISTS: Lists = Object.create(null);

/** See the module's comment. */
export class Emitter<T extends EventMap<T>, Context = unknown> {
  /** Listeners by event; an event without listeners has no key. */
  #events: Lists | undefined;

  /** The events that have listeners. */
  eventNames(): (keyof T)[] {
    return this.#events === undefined ? [] : (Reflect.ownKeys(this.#events) as (keyof T)[]);
  }

  /** The listeners of `event`, in the order they run. */
  listeners<K extends keyof T>(event: K): Listener<T, K>[] {
    return this.#list(event).map((e) => e.fn as Listener<T, K>);
  }

  /** How many listeners `event` has. */
  listenerCount(event: keyof T): number {
    const list = this.#events?.[event];
    return typeof list === "function" ? 1 : (list?.length ?? 0);
  }

  /** Calls the listeners of `event` with `args`; true when it had any. */
  emit<K extends keyof T>(event: K, ...args: T[K]): boolean {
    const list = this.#events?.[event];
    if (list === undefined) return false;
    if (typeof list === "function") {
      list.apply(this, args);
      return true;
    }
    // Lists are replaced, never changed: a listener that adds or removes listeners does not change this round.
    // An indexed loop (no iterator) costs a lone listener, the usual case, nothing extra.
    let thrown: { error: unknown } | undefined;
    for (let i = 0; i < list.length; i++) {
      const e = list[i];
      if (e.once) {
        if (e.once === 2) continue;
        e.once = 2;
        this.removeListener(event, e.fn as Listener<T, K>, e.context as Context, true);
      }
      try {
        (e.fn as (...a: unknown[]) => void).apply(e.context, args);
      } catch (error) {
        // A throwing listener (the application's bug) keeps none after it from running (pointsub's own
        // cleanup among them): the first error is thrown once they all ran. A later listener's error is
        // dropped, by choice: the browser's first load carries this emitter, and the first error already
        // reports the bug (an AggregateError would change what the callers surface: an uncaught error
        // of the listener's own, as `eventemitter3` threw it, and the cluster counts one per event).
        thrown ??= { error };
      }
    }
    if (thrown !== undefined) throw thrown.error;
    return true;
  }

  /** Adds a listener of `event` (`this` is `context` when it runs). */
  on<K extends keyof T>(event: K, fn: Listener<T, K>, context?: Context): this {
    return this.#add(event, fn, context, false);
  }

  /** Same as {@link on}. */
  addListener<K extends keyof T>(event: K, fn: Listener<T, K>, context?: Context): this {
    return this.#add(event, fn, context, false);
  }

  /** Adds a listener of `event` that runs once. */
  once<K extends keyof T>(event: K, fn: Listener<T, K>, context?: Context): this {
    return this.#add(event, fn, context, true);
  }

  /**
   * Removes the listeners of `event` that are `fn` (all of them when `fn` is
   * not given), added with `context` and, when `once` is true, with `once`.
   */
  removeListener<K extends keyof T>(event: K, fn?: Listener<T, K>, context?: Context, once?: boolean): this {
    const events = this.#events;
    if (events?.[event] === undefined) return this;
    const list = this.#list(event);
    const kept =
      fn === undefined
        ? []
        : list.filter(
            // Falsy filters filter nothing, as `eventemitter3`'s: `off(event, fn, null)` removes `fn`.
            (e) => e.fn !== fn || (once && !e.once) || (context && e.context !== context),
          );
    if (kept.length === 0) delete (events as Lists)[event];
    else (events as Lists)[event] = kept;
    return this;
  }

  /** Same as {@link removeListener}. */
  off<K extends keyof T>(event: K, fn?: Listener<T, K>, context?: Context, once?: boolean): this {
    return this.removeListener(event, fn, context, once);
  }

  /** Removes every listener of `event`, or of every event. */
  removeAllListeners(event?: keyof T): this {
    if (event === undefined) this.#events = undefined;
    else this.removeListener(event);
    return this;
  }

  /** The listeners of `event` as entries (a lone one kept bare as one). */
  #list(event: keyof T): Entry[] {
    const list = this.#events?.[event];
    return typeof list === "function" ? [{ fn: list, context: this, once: false }] : (list ?? []);
  }

  #add(event: keyof T, fn: unknown, context: unknown, once: boolean): this {
    if (typeof fn !== "function") throw new TypeError("The listener must be a function");
    this.#events ??= Object.create(LISTS) as Lists;
    const events = this.#events;
    const bare = !once && (context || this) === this;
    if (events[event] === undefined && bare) events[event] = fn as Bare;
    // A new array: an emit in progress keeps its own.
    else events[event] = [...this.#list(event), { fn, context: context || this, once }];
    return this;
  }
}
