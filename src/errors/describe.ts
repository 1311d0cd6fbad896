/**
 * The text of anything thrown: an Error's message, else the value as a
 * string. Never throws itself: a handler may throw (or reject with) a value
 * `String` cannot convert (`Object.create(null)`, a throwing `toString`),
 * and this is called where a throw would leave a call unanswered. (A file of
 * its own: only the dispatcher and the idempotency middleware, loaded on
 * demand in a browser, use it.)
 */
export function describeThrown(value: unknown): string {
  try {
    return String(value instanceof Error ? value.message : value);
  } catch {
    return `a thrown ${typeof value} that cannot be shown as text`;
  }
}
