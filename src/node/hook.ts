/**
 * Calls an application hook that is told what was done (a file stored, a
 * download ended). A throw is the application's bug: it is surfaced —
 * thrown again from a microtask, an uncaught exception as a throwing event
 * listener's is — and changes nothing of what was done. Before, a throwing
 * `onFile` failed the upload with ERR_HANDLER although the file was stored
 * and named, and a throwing `onGetEnd` failed a download the asker had
 * stored (and was called again with its own error).
 */
export function tellHook<A extends unknown[]>(hook: ((...args: A) => void) | undefined, ...args: A): void {
  if (hook === undefined) return;
  try {
    hook(...args);
  } catch (err) {
    queueMicrotask(() => {
      throw err;
    });
  }
}
