/**
 * What an optional package's failed import says (cluster/engine.ts's engines, p2p/node.ts's libp2p): the
 * failures that may pass, once, and the suggestions of those that do not.
 */
import { PointSubError } from "./error.ts";

/**
 * The codes of a failed import that a later one may not meet: this machine's passing state (file
 * descriptors, memory, a busy or failing disk). Any other failure is the package's (an error in its code,
 * a native module built for another Node, an entry it does not export, files it may not read): the same
 * import fails again.
 */
export const TRANSIENT_LOAD_ERRORS: ReadonlySet<string> = new Set([
  "EMFILE",
  "ENFILE",
  "ENOMEM",
  "EAGAIN",
  "EBUSY",
  "EINTR",
  "EIO",
]);

/** Failures of an import said retryable once ({@link passingOrKept}). */
const passingFailures = new WeakSet<object>();

/**
 * A {@link TRANSIENT_LOAD_ERRORS} failure `cause` of an import: ERR_CONNECT (retryable) the first time;
 * the same error again is Node's module cache handing back the failure it kept (a module whose evaluation
 * failed — a CommonJS package whose require of one of its files met EMFILE — fails every later import of it
 * in this process with that error): ERR_INVALID_ARGUMENT, not retryable (before, ERR_CONNECT: a
 * reconnecting caller met the kept EMFILE for ever).
 */
export function passingOrKept(cause: unknown, message: string): PointSubError {
  if (typeof cause !== "object" || cause === null) return new PointSubError("ERR_CONNECT", message, { cause });
  if (passingFailures.has(cause)) {
    return new PointSubError("ERR_INVALID_ARGUMENT", `${message}, kept by Node's module cache since an earlier try`, {
      cause,
      suggestion: KEPT_FAILURE,
    });
  }
  passingFailures.add(cause);
  return new PointSubError("ERR_CONNECT", message, { cause });
}

/** The suggestion of a passing failure Node's module cache kept. */
const KEPT_FAILURE =
  "Node keeps a module's failed evaluation: no later import in this process loads the package. Restart the process once the cause (file descriptors, memory, the disk) is gone.";

/** The suggestion of a package that is installed but cannot be loaded. */
export const BROKEN_PACKAGE =
  "Reinstall the package named in the message, in a version pointsub supports (its peerDependencies); the cause says what failed.";
