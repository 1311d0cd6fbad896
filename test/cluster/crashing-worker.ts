/** A worker for test/cluster/workers.test.ts that dies at once (exit code 3): its pool restarts it until maxRestarts. */
process.exit(3);
