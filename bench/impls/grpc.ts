/**
 * @grpc/grpc-js with bytes in and bytes out (identity serializers, no
 * protobuf cost). One-way messages go over one client-streaming call, as
 * gRPC recommends for message streams; requests are unary calls. Message
 * size limits lifted for the large workload. Default limit recorded in the
 * report: 4 MiB receive.
 */
import * as grpc from "@grpc/grpc-js";
import { clientArgs, serveRole } from "../lib/role.ts";
import { runWorkload } from "../lib/workload.ts";

const bytes = { serialize: (b: Buffer) => b, deserialize: (b: Buffer) => b };
const method = (path: string, requestStream: boolean) => ({
  path,
  requestStream,
  responseStream: false,
  requestSerialize: bytes.serialize,
  requestDeserialize: bytes.deserialize,
  responseSerialize: bytes.serialize,
  responseDeserialize: bytes.deserialize,
});
const service = {
  echo: method("/bench.Bench/Echo", false),
  sink: method("/bench.Bench/Sink", false),
  flood: method("/bench.Bench/Flood", true),
} satisfies grpc.ServiceDefinition;
const options = { "grpc.max_receive_message_length": -1, "grpc.max_send_message_length": -1 };
const EMPTY = Buffer.alloc(0);

async function server(): Promise<void> {
  await serveRole(async () => {
    const srv = new grpc.Server(options);
    let total = 0;
    srv.addService(service, {
      echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb(null, call.request),
      sink: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb(null, EMPTY),
      flood: (call: grpc.ServerReadableStream<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
        call.on("data", () => {
          total++;
        });
        call.on("end", () => {
          const b = Buffer.alloc(4);
          b.writeUInt32BE(total, 0);
          cb(null, b);
        });
      },
    });
    const port = await new Promise<number>((r, j) =>
      srv.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) => (e ? j(e) : r(p))),
    );
    return { url: `grpc://127.0.0.1:${port}`, close: () => new Promise<void>((r) => srv.tryShutdown(() => r())) };
  });
}

async function client(): Promise<void> {
  const { url, workload, params } = clientArgs();
  const Client = grpc.makeGenericClientConstructor(service, "Bench");
  const c = new Client(new URL(url).host, grpc.credentials.createInsecure(), options) as unknown as Record<
    string,
    (...args: unknown[]) => unknown
  >;
  const unary = (name: string, msg: Uint8Array) =>
    new Promise<Buffer>((resolve, reject) =>
      c[name](Buffer.from(msg.buffer, msg.byteOffset, msg.length), (e: Error | null, r: Buffer) =>
        e ? reject(e) : resolve(r),
      ),
    );
  let stream: grpc.ClientWritableStream<Buffer> | undefined;
  let streamCount: Promise<number> | undefined;
  const open = () => {
    streamCount = new Promise<number>((resolve, reject) => {
      stream = c.flood((e: Error | null, r: Buffer) =>
        e ? reject(e) : resolve(r.readUInt32BE(0)),
      ) as grpc.ClientWritableStream<Buffer>;
    });
  };
  await runWorkload(
    {
      send: (msg) => {
        if (stream === undefined) open();
        return (stream as grpc.ClientWritableStream<Buffer>).write(Buffer.from(msg.buffer, msg.byteOffset, msg.length));
      },
      drained: () => new Promise<void>((r) => stream?.once("drain", () => r())),
      count: async () => {
        stream?.end();
        stream = undefined;
        return (await streamCount) ?? 0;
      },
      echo: (msg) => unary("echo", msg),
      sink: (big) => unary("sink", big),
      close: () => (c as unknown as grpc.Client).close(),
      open: async () => {
        // A channel connects lazily: wait until it is ready.
        const one = new Client(new URL(url).host, grpc.credentials.createInsecure(), {
          ...options,
          "grpc.use_local_subchannel_pool": 1,
        }) as unknown as grpc.Client;
        await new Promise<void>((r, j) => one.waitForReady(Date.now() + 30_000, (e) => (e ? j(e) : r())));
        return { close: () => one.close() };
      },
    },
    workload,
    params,
  );
}

if (process.argv[2] === "server") await server();
else await client();
