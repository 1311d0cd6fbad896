/**
 * Run by test/server/per-address-v6.test.ts inside a network namespace of
 * its own (`unshare -n`) whose loopback holds 2001:db8::1, 2001:db8::2 (one
 * /64) and 2001:db8:0:1::1 (another): a server with maxConnectionsPerAddress
 * 1 on [::], and a client connecting to each address (the kernel picks the
 * address connected to as the source). Prints what each connect did, as JSON.
 */
import { connect, createServer, type PointSubError } from "../../src/index.ts";

const server = createServer({ maxConnectionsPerAddress: 1 });
const [url] = await server.listen("tcp://[::]:0");
const port = new URL(url).port;
const results: Record<string, string> = {};
const open = [];
for (const host of ["2001:db8::1", "2001:db8::2", "2001:db8:0:1::1"]) {
  try {
    const c = await connect(`tcp://[${host}]:${port}`, { connectTimeoutMs: 3000 });
    open.push(c);
    results[host] = `open from ${c.localUrl}`;
  } catch (err) {
    results[host] = (err as PointSubError).code;
  }
}
for (const c of open) await c.close();
await server.close();
console.log(JSON.stringify(results));
