/**
 * Runs `fn` with the process's uncaught exceptions collected in `caught`
 * (node:test's own listener, which fails the test, set aside meanwhile):
 * for tests of listeners that throw, whose errors surface uncaught.
 */
export async function catchingUncaught(fn: (caught: string[]) => Promise<void>): Promise<void> {
  const caught: string[] = [];
  const saved = process.listeners("uncaughtException");
  process.removeAllListeners("uncaughtException");
  process.on("uncaughtException", (e) => caught.push(e.message));
  try {
    await fn(caught);
  } finally {
    process.removeAllListeners("uncaughtException");
    for (const l of saved) process.on("uncaughtException", l);
  }
}
