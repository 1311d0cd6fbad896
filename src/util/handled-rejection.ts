/**
 * A rejected promise that does not count as unhandled: for methods whose
 * promise may be dropped (a fire-and-forget `send`), whose errors are also
 * reported on the connection.
 */
const noop = (): void => {};

export function handledRejection(err: unknown): Promise<never> {
  const p = Promise.reject(err);
  p.catch(noop);
  return p;
}
