/**
 * The principal `pointsub serve` derives from a trusted client certificate
 * (mutual TLS without a token) is unambiguous: `cert:<CN>` for one common
 * name without a comma, else `cert-sha256:<fingerprint>` — certificates whose
 * subjects flatten to the same text, or whose CN spells a fingerprint, do not
 * share a principal.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { certificateAuth } from "../../src/cli/auth.ts";
import type { PeerCertificate } from "../../src/index.ts";

const FP = "AB:CD:EF";
function principal(subject: Record<string, string>, authorized = true, fingerprint256 = FP): unknown {
  const peerCertificate: PeerCertificate = { subject, fingerprint256, raw: new Uint8Array(1), authorized };
  return certificateAuth(new Uint8Array(0), { peerCertificate } as unknown as Parameters<typeof certificateAuth>[1]);
}

describe("serve: the principal of a client certificate", () => {
  it("one CN: cert:<CN>; several (reported joined by ', '), one with a comma, none or empty: cert-sha256:<fingerprint>", () => {
    assert.equal(principal({ CN: "alice" }), "cert:alice");
    assert.equal(principal({ CN: "alice, admin" }), `cert-sha256:${FP}`);
    assert.equal(principal({ CN: "Smith,John" }), `cert-sha256:${FP}`);
    assert.equal(principal({ O: "x" }), `cert-sha256:${FP}`);
    assert.equal(principal({ CN: "" }), `cert-sha256:${FP}`);
    // A CN spelling another certificate's fingerprint is that CN, not the fingerprint principal.
    assert.equal(principal({ CN: FP }, true, "11:22"), `cert:${FP}`);
    assert.notEqual(principal({ CN: FP }, true, "11:22"), principal({ O: "x" }));
  });

  it("a certificate that is not trusted is refused", () => {
    assert.throws(() => principal({ CN: "alice" }, false), { code: "ERR_UNAUTHORIZED" });
  });
});
