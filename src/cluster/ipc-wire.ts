/**
 * The messages between a worker's IPC engine (`ipc-engine.ts`) and the
 * primary's relay (`ipc-relay.ts`) on the Node IPC channel of
 * `node:cluster`. Every one is an object with the key `"@pointsub"` (its
 * kind), so an application's own IPC messages pass by untouched. Payloads
 * are `Uint8Array` under `serialization: "advanced"` (what `runWorkers`
 * sets) and base64 strings under the default JSON serialization.
 */

/** The key that marks pointsub's IPC messages. */
export const TAG = "@pointsub";

/** Longest key or value the primary's relay keeps, in characters. */
export const MAX_KV_STRING = 1 << 20;

/** The environment variable that tells a worker its channel's serialization (`advanced`; else JSON). */
export const SERIALIZATION_ENV = "POINTSUB_IPC_SERIALIZATION";

/** Bytes as the channel carries them. */
export type IpcBytes = Uint8Array | string;

/** Worker → primary. */
export type ToPrimary =
  | { readonly [TAG]: "sub"; readonly s: string }
  | { readonly [TAG]: "pub"; readonly s: string; readonly d: IpcBytes }
  /** Published by the relay on the worker's behalf when it dies (its `bye`). */
  | { readonly [TAG]: "will"; readonly s: string; readonly d: IpcBytes }
  | { readonly [TAG]: "leave" }
  | {
      readonly [TAG]: "kv";
      readonly id: number;
      readonly op: "create" | "get" | "update" | "delete";
      readonly key: string;
      readonly value?: string;
      readonly rev?: string;
      readonly ttl?: number;
    }
  /** The worker's server listens (`serveWorkers`); `urls` as bound. */
  | { readonly [TAG]: "ready"; readonly urls: string[] };

/** Primary → worker. */
export type ToWorker =
  | { readonly [TAG]: "msg"; readonly s: string; readonly d: IpcBytes }
  | {
      readonly [TAG]: "kv";
      readonly id: number;
      readonly ok?: boolean;
      readonly value?: string;
      readonly rev?: string;
      readonly error?: string;
    };

/** Whether `m` is one of pointsub's IPC messages. */
export function isTagged(m: unknown): m is Record<string, unknown> & { [TAG]: string } {
  return typeof m === "object" && m !== null && typeof (m as Record<string, unknown>)[TAG] === "string";
}

/** Bytes for the channel: as they are under advanced serialization, else base64. */
export function toIpc(d: Uint8Array, advanced: boolean): IpcBytes {
  return advanced ? d : Buffer.from(d.buffer, d.byteOffset, d.byteLength).toString("base64");
}

/** Bytes from the channel (undefined when neither bytes nor a string). */
export function fromIpc(d: unknown): Uint8Array | undefined {
  if (d instanceof Uint8Array) return d;
  if (typeof d === "string") return new Uint8Array(Buffer.from(d, "base64"));
  return undefined;
}
