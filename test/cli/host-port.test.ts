/**
 * `--metrics` / `--dashboard` host:port (parseHostPort): what the options'
 * own parsers took before the CLI checked it is still taken — host names,
 * IPv4, bracketed IPv6 with or without a zone (`--dashboard [::1%lo]:0`
 * served before the check and was refused by it), port 0 — and the rest is
 * refused.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { InvalidArgumentError } from "commander";
import { parseHostPort } from "../../src/cli/options.ts";

describe("parseHostPort", () => {
  it("takes host names, IPv4, IPv6 in brackets (a zone too) and ports 0..65535", () => {
    for (const v of [
      "localhost:9464",
      "127.0.0.1:0",
      "0.0.0.0:65535",
      "metrics.example.com:9464",
      "[::1]:9464",
      "[::]:0",
      "[::ffff:127.0.0.1]:8080",
      "[fe80::1%eth0]:8080",
      "[::1%lo]:0",
    ]) {
      assert.equal(parseHostPort(v), v);
    }
  });

  it("refuses the rest", () => {
    for (const v of ["9464", ":9464", "::1:9464", "[::1]", "host:", "host:65536", "[::1%]:1", "[::1%a b]:1", "a b:1"]) {
      assert.throws(() => parseHostPort(v), InvalidArgumentError, v);
    }
  });
});
