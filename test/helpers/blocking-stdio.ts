/**
 * Preloaded into every test process (`npm test`: `node --import`, which the
 * test runner passes on to the process it runs each file in). A file's
 * process reports its results to the runner over a pipe, and with
 * `--test-force-exit` it exits as soon as its tests are done: pipe writes
 * are asynchronous on Linux, so the last results could be cut off, and the
 * runner then reported fewer tests than ran, still passing (nodejs/node
 * #64833: 1,637–1,702 of 1,800 here; one of this suite's runs lost a whole
 * 14-test suite). Blocking writes make every result arrive.
 */
for (const stream of [process.stdout, process.stderr]) {
  (stream as unknown as { _handle?: { setBlocking?: (on: boolean) => void } })._handle?.setBlocking?.(true);
}
