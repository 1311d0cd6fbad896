/** Payloads as bytes (a file of its own: the dispatcher and the connection both use it, without a cycle). */
import { PointSubError } from "../errors/error.ts";
import type { Payload } from "./types.ts";

const encoder = new TextEncoder();

/** Bytes or text as bytes; ERR_INVALID_ARGUMENT for anything else. */
export function toBytes(payload: Payload, what: string): Uint8Array {
  if (payload instanceof Uint8Array) return payload;
  if (typeof payload === "string") return encoder.encode(payload);
  throw new PointSubError("ERR_INVALID_ARGUMENT", `${what} must be a Uint8Array or a string`);
}
