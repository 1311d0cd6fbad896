/**
 * @internal The frame decoder's states, as numbers: a module that imports
 * nothing, so esbuild inlines them where they are read (an object's
 * properties would be read at run time, and spelt out in the bundle).
 */

/** Reading the connection preface. */
export const PREFACE = 0;
/** Reading a frame header. */
export const HEADER = 1;
/** Reading a frame body that spans pushes. */
export const BODY = 2;
/** A frame was invalid: every later push throws. */
export const FAILED = 3;

export type DecoderState = typeof PREFACE | typeof HEADER | typeof BODY | typeof FAILED;
