// CSI failures as gRPC statuses (CSI spec v1.12, "Error Scheme"): every layer
// throws a GrpcError with the code the spec names for that case and a message
// that says what to fix; toGrpcError maps anything else (engine client
// errors, file-system errors) onto the nearest code.
import * as grpc from '@grpc/grpc-js';
import { GrpcError } from '../protos/grpc.ts';
import { EngineError } from '../hba/engine-errors.ts';

/** gRPC status codes by name. */
export const Code = grpc.status;

/** A request field is missing or malformed. */
export function invalidArgument(message: string): GrpcError {
  return new GrpcError(Code.INVALID_ARGUMENT, message);
}
/** The named volume, snapshot or node does not exist. */
export function notFound(message: string): GrpcError {
  return new GrpcError(Code.NOT_FOUND, message);
}
/** An object with this name exists with incompatible properties. */
export function alreadyExists(message: string): GrpcError {
  return new GrpcError(Code.ALREADY_EXISTS, message);
}
/** The system is not in the state the call needs. */
export function failedPrecondition(message: string): GrpcError {
  return new GrpcError(Code.FAILED_PRECONDITION, message);
}
/** A requested size cannot be honoured. */
export function outOfRange(message: string): GrpcError {
  return new GrpcError(Code.OUT_OF_RANGE, message);
}
/** Another call holds the volume, or a paging token is stale. */
export function aborted(message: string): GrpcError {
  return new GrpcError(Code.ABORTED, message);
}
/** Space or a per-node limit is exhausted. */
export function resourceExhausted(message: string): GrpcError {
  return new GrpcError(Code.RESOURCE_EXHAUSTED, message);
}
/** The call is not offered in this mode. */
export function unimplemented(message: string): GrpcError {
  return new GrpcError(Code.UNIMPLEMENTED, message);
}
/** A dependency (the engine) cannot be reached. */
export function unavailable(message: string): GrpcError {
  return new GrpcError(Code.UNAVAILABLE, message);
}

const ERRNO_CODES: Record<string, number> = {
  ENOSPC: Code.RESOURCE_EXHAUSTED,
  EDQUOT: Code.RESOURCE_EXHAUSTED,
  EFBIG: Code.OUT_OF_RANGE,
  EACCES: Code.PERMISSION_DENIED,
  EPERM: Code.PERMISSION_DENIED,
  EROFS: Code.FAILED_PRECONDITION,
};

/** Maps any thrown value onto a GrpcError: GrpcError kept; EngineError and
 * errors from the engine's gRPC client keep their code (prefixed "engine:");
 * file-system errno values mapped by kind; anything else INTERNAL. */
export function toGrpcError(err: unknown): GrpcError {
  if (err instanceof GrpcError) return err;
  if (err instanceof EngineError) return new GrpcError(err.grpcCode, `engine: ${err.message}`);
  const e = err as { code?: unknown; details?: unknown; message?: unknown; metadata?: unknown };
  if (typeof e?.code === 'number' && e.metadata !== undefined) {
    // A grpc-js ServiceError from the engine's control API.
    const details = typeof e.details === 'string' ? e.details : String(e.message);
    const code = e.code === Code.UNAVAILABLE || e.code === Code.DEADLINE_EXCEEDED ? Code.UNAVAILABLE : e.code;
    return new GrpcError(code, `engine: ${details}`);
  }
  if (typeof e?.code === 'string' && e.code in ERRNO_CODES) {
    return new GrpcError(ERRNO_CODES[e.code]!, String(e.message));
  }
  return new GrpcError(Code.INTERNAL, err instanceof Error ? err.message : String(err));
}
