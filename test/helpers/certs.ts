import { generate } from "selfsigned";

/** PEM material made at test time: a CA, a server certificate for localhost/127.0.0.1/::1, and a client certificate. */
export interface TestCerts {
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** A CA that signed none of the above: trusting only it must fail verification. */
  otherCa: string;
  /** A client certificate signed by `otherCa`: a server trusting `ca` must refuse it. */
  otherClientCert: string;
  otherClientKey: string;
}

let cached: Promise<TestCerts> | undefined;
/** The CA of {@link testCerts}, key included (for {@link rotatedServerCert}). */
let testCa: Promise<{ cert: string; key: string }> | undefined;

async function makeCa(cn: string): Promise<{ cert: string; key: string }> {
  const ca = await generate([{ name: "commonName", value: cn }], {
    keyType: "ec",
    curve: "P-256",
    algorithm: "sha256",
    extensions: [
      { name: "basicConstraints", cA: true, critical: true },
      { name: "keyUsage", keyCertSign: true, cRLSign: true, critical: true },
    ],
  });
  return { cert: ca.cert, key: ca.private };
}

async function makeLeaf(
  cn: string,
  ca: { cert: string; key: string },
  usage: "server" | "client",
  notBeforeDate?: Date,
): Promise<{ cert: string; key: string }> {
  const leaf = await generate([{ name: "commonName", value: cn }], {
    notBeforeDate,
    keyType: "ec",
    curve: "P-256",
    algorithm: "sha256",
    ca,
    extensions: [
      { name: "basicConstraints", cA: false },
      { name: "keyUsage", digitalSignature: true, keyEncipherment: true },
      { name: "extKeyUsage", serverAuth: usage === "server", clientAuth: usage === "client" },
      {
        name: "subjectAltName",
        altNames: [
          { type: 2, value: "localhost" },
          { type: 7, ip: "127.0.0.1" },
          { type: 7, ip: "::1" },
        ],
      },
    ],
  });
  return { cert: leaf.cert, key: leaf.private };
}

/** Generates (once per process) the certificates for TLS tests. */
export function testCerts(): Promise<TestCerts> {
  cached ??= (async () => {
    testCa ??= makeCa("pointsub test CA");
    const ca = await testCa;
    const other = await makeCa("pointsub other CA");
    const server = await makeLeaf("localhost", ca, "server");
    const client = await makeLeaf("pointsub test client", ca, "client");
    const otherClient = await makeLeaf("pointsub test client", other, "client");
    return {
      ca: ca.cert,
      serverCert: server.cert,
      serverKey: server.key,
      clientCert: client.cert,
      clientKey: client.key,
      otherCa: other.cert,
      otherClientCert: otherClient.cert,
      otherClientKey: otherClient.key,
    };
  })();
  return cached;
}

/**
 * A new server certificate for localhost/127.0.0.1/::1 from {@link testCerts}'s CA, valid from `notBefore`
 * (a rotation to a certificate just issued, seen by a client whose clock is behind the CA's).
 */
export async function rotatedServerCert(notBefore: Date): Promise<{ cert: string; key: string }> {
  await testCerts();
  return makeLeaf("localhost", await (testCa as Promise<{ cert: string; key: string }>), "server", notBefore);
}
