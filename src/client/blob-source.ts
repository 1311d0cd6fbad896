/**
 * A Blob (a browser's `File`) as a {@link ResumableSource}: what a page needs
 * to upload a file the user picked with `sendResumable` and pick it up where
 * the receiver stopped after a dropped connection.
 */
import { PointSubError } from "../errors/error.ts";
import { checkOptions } from "../errors/options.ts";
import { blobPrefixCrc, isBlob } from "../stream/blob.ts";
import { newTransferId } from "../transfer/transfer-id.ts";
import type { ResumableSource } from "./resumable.ts";

/** Options of {@link blobSource}. */
export interface BlobSourceOptions {
  /**
   * Stable id of this transfer: 32..128 characters of `[A-Za-z0-9_-]`, the
   * capability to query and resume it on the receiver, so it must be
   * unguessable. Default: a random one, which resumes across dropped
   * connections within this `sendResumable`; keep it (for example in
   * `localStorage`, next to the file's name, size and `lastModified`) and
   * pass it again to resume after a page reload.
   */
  transferId?: string;
}

/**
 * `blob` (a `File` too) as a source `sendResumable` can reopen at any
 * offset (`blob.slice(offset)`), with its size, and the CRC32C of any
 * prefix read back from the Blob, so what the receiver holds is checked
 * against this content before it is resumed.
 */
export function blobSource(blob: Blob, options: BlobSourceOptions = {}): ResumableSource {
  if (!isBlob(blob)) throw new PointSubError("ERR_INVALID_ARGUMENT", "blobSource needs a Blob or a File");
  // Null threw a raw TypeError.
  checkOptions(options, "blobSource");
  const transferId = options.transferId ?? newTransferId();
  if (typeof transferId !== "string" || !/^[A-Za-z0-9_-]{32,128}$/.test(transferId)) {
    throw new PointSubError(
      "ERR_INVALID_ARGUMENT",
      "transferId must be 32 to 128 characters [A-Za-z0-9_-] (an unguessable capability)",
    );
  }
  return {
    size: blob.size,
    transferId,
    open: (offset) => blob.slice(offset),
    prefixCrc: (length) => blobPrefixCrc(blob, length),
  };
}
