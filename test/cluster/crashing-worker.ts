/** A worker for test/cluster/workers.test.ts that dies at once (exit code 3), before it is ready: its pool does not start. */
process.exit(3);
