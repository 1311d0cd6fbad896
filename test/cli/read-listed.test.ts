/**
 * `send` reads a bundled file at the size its walk listed (open, one read,
 * close: no fstat per file), and still sends what the file holds when it
 * changed since: a file that shrank is sent short, one that grew is read
 * whole. The connection opens while directories are walked, only once every
 * argument was checked: a bad argument fails without connecting.
 */
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { collectFiles, readBundle, readListed, sendCommand } from "../../src/cli/send.ts";
import { encodeBundle } from "../../src/codec/file-bundle.ts";

describe("send reads small files at their listed size", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "pointsub-read-listed-"));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it("reads a bundle's files straight into it (the same bytes as encodeBundle); a file that changed size is left to readListed", async () => {
    const sub = join(dir, "tree");
    await mkdir(sub);
    const data = [Buffer.from("first file"), Buffer.alloc(0), Buffer.from("é — a third, with UTF-8")];
    for (let i = 0; i < data.length; i++) await writeFile(join(sub, `f${i}`), data[i]);
    await writeFile(join(sub, "plain"), "sent under its name");
    const items = await collectFiles([sub], true);
    const named = (await collectFiles([join(sub, "plain")], false))[0];
    const group = [...items.filter((it) => it.target !== "tree/plain"), named];
    const contents: Uint8Array[] = [];
    const body = readBundle(group, contents);
    assert.ok(body !== undefined);
    const expected = encodeBundle(
      group.map((it) =>
        it.tree ? { path: it.target, content: readListed(it) } : { name: it.target, content: readListed(it) },
      ),
    );
    assert.deepEqual(Buffer.from(body), Buffer.from(expected));
    assert.deepEqual(
      contents.map((c) => Buffer.from(c).toString()),
      [...data.map((d) => d.toString()), "sent under its name"],
    );
    // Grown or shrunk since the walk listed it: not read in place (the caller reads each on its own).
    await writeFile(join(sub, "f0"), "first file, longer now");
    assert.equal(readBundle(group, []), undefined);
    await writeFile(join(sub, "f0"), "first");
    assert.equal(readBundle(group, []), undefined);
    await rm(join(sub, "f0"));
    assert.equal(readBundle(group, []), undefined, "gone");
  });

  it("reads exactly the listed bytes, and what is there when the file shrank or grew", async () => {
    const file = join(dir, "a.bin");
    const content = Buffer.from("0123456789abcdef");
    await writeFile(file, content);
    const [item] = await collectFiles([file], false);
    assert.equal(item.size, 16);
    assert.deepEqual(Buffer.from(readListed(item)), content);
    await writeFile(file, content.subarray(0, 5));
    assert.deepEqual(Buffer.from(readListed(item)), content.subarray(0, 5), "shrank: its present content");
    const grown = Buffer.concat([content, Buffer.from("more bytes")]);
    await writeFile(file, grown);
    assert.deepEqual(Buffer.from(readListed(item)), grown, "grew: read whole");
    await writeFile(file, "");
    assert.equal(readListed({ ...item, size: 0 }).length, 0);
    assert.deepEqual(Buffer.from(readListed({ ...item, size: 0 })), Buffer.alloc(0));
    await writeFile(file, "x");
    assert.deepEqual(Buffer.from(readListed({ ...item, size: 0 })), Buffer.from("x"), "an empty file that grew");
  });

  it("checks every argument before it connects (a bad one: no connection at all)", async () => {
    let connections = 0;
    const server = net.createServer((s) => {
      connections++;
      s.destroy();
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as net.AddressInfo).port;
    try {
      await writeFile(join(dir, "ok.bin"), "x");
      await assert.rejects(
        sendCommand([join(dir, "ok.bin"), join(dir, "missing.bin")], {
          to: `tcp://127.0.0.1:${port}`,
          compress: "off",
          retries: 0,
          resume: true,
          json: true,
        }),
        (err: Error & { code?: string }) => err.code === "ERR_INVALID_ARGUMENT" && /missing\.bin/.test(err.message),
      );
      let armed = false;
      await collectFiles([dir], true, undefined, () => {
        armed = true;
      });
      assert.ok(armed, "the hook runs once the arguments are checked");
      assert.equal(connections, 0);
    } finally {
      server.close();
    }
  });

  it("a name that is not UTF-8 is skipped and said (it was sent as the file whose name it decodes to, or failed as not found)", async () => {
    const sub = join(dir, "odd");
    await mkdir(sub);
    await writeFile(Buffer.concat([Buffer.from(`${sub}/`), Buffer.from([0x62, 0xff, 0x2e, 0x74])]), "not UTF-8");
    await writeFile(join(sub, "b\uFFFD.t"), "the real one");
    await writeFile(join(sub, "plain"), "plain");
    // A name that starts with U+FEFF keeps it (a UTF-8 decoder drops a leading BOM by default).
    await writeFile(join(sub, "\uFEFFbom"), "bom");
    const skipped: [string, string][] = [];
    const items = await collectFiles([sub], true, (path, why) => skipped.push([path, why]));
    assert.deepEqual(
      items.map((it) => [it.target, it.size]),
      [
        ["odd/b\uFFFD.t", "the real one".length],
        ["odd/plain", 5],
        ["odd/\uFEFFbom", 3],
      ],
    );
    assert.equal(skipped.length, 1, JSON.stringify(skipped));
    assert.equal(skipped[0][1], "its name is not UTF-8");
    assert.ok(skipped[0][0].startsWith(`${sub}/b`), skipped[0][0]);
  });

  it("a file removed while the walk goes on is skipped and said; the others are listed (the whole send failed with ENOENT)", async () => {
    const sub = join(dir, "vanish");
    await mkdir(sub);
    for (const n of ["a", "b", "c"]) await writeFile(join(sub, n), n);
    const skipped: [string, string][] = [];
    const items = await collectFiles(
      [sub],
      true,
      (path, why) => skipped.push([path, why]),
      () => {},
      (it) => {
        // "b" goes once "a" was listed, before the walk reaches it.
        if (it.target === "vanish/a") rmSync(join(sub, "b"));
        return undefined;
      },
    );
    assert.deepEqual(
      items.map((it) => it.target),
      ["vanish/a", "vanish/c"],
    );
    assert.deepEqual(skipped, [[join(sub, "b"), "gone since its directory was listed"]]);
  });
});
