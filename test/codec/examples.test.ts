import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { examples } from "../../scripts/protocol-examples.ts";
import { FrameDecoder } from "../../src/codec/decoder.ts";

const raw = readFileSync(new URL("../../docs/PROTOCOL.md", import.meta.url), "utf8");
const doc = raw.replace(/\s+/g, " ");

describe("docs/PROTOCOL.md worked examples", () => {
  for (const [name, hex] of Object.entries(examples)) {
    it(`${name}: the document shows what the encoder produces`, () => {
      if (name === "hello") {
        // Shown annotated, a few bytes per line: the leading hex of each line, joined, is preface + HELLO.
        const block = raw.slice(raw.indexOf("### 5.1"), raw.indexOf("### 5.2")).split("```")[1];
        const shown = block
          .split("\n")
          .map((line) => line.trim().match(/^([0-9a-f]{2}( +[0-9a-f]{2})*)/)?.[1] ?? "")
          .filter((x) => x !== "")
          .join(" ")
          .replace(/ +/g, " ");
        assert.equal(shown, `${examples.preface} ${hex}`);
        return;
      }
      assert.ok(doc.includes(hex), `${name} not found in PROTOCOL.md: ${hex}`);
    });
  }
  it("every complete example decodes", () => {
    for (const [name, hex] of Object.entries(examples)) {
      if (name === "preface" || name.startsWith("chunk")) continue;
      const frames: number[] = [];
      const d = new FrameDecoder({ onPreface() {}, onFrame: (type) => frames.push(type) }, 1 << 20);
      d.push(new Uint8Array([0x50, 0x53, 0x55, 0x42, 1, 1]));
      d.push(new Uint8Array(Buffer.from(hex.replace(/ /g, ""), "hex")));
      assert.ok(frames.length >= 1, name);
      assert.ok(d.idle, name);
    }
  });
});
