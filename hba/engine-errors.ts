// Errors the engine raises for callers to map onto their own protocol (the
// control API maps `code` onto the gRPC status of the same name).

export type EngineErrorCode =
  | 'INVALID_ARGUMENT'
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'FAILED_PRECONDITION'
  | 'RESOURCE_EXHAUSTED'
  | 'UNAVAILABLE';

const GRPC_CODES: Record<EngineErrorCode, number> = {
  INVALID_ARGUMENT: 3,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  FAILED_PRECONDITION: 9,
  RESOURCE_EXHAUSTED: 8,
  UNAVAILABLE: 14,
};

/** An engine failure with a machine-readable code and a message that says
 * what to fix, e.g. new EngineError('ALREADY_EXISTS', 'target 1 lun 0 of vm1/hba0 is attached with other parameters'). */
export class EngineError extends Error {
  readonly code: EngineErrorCode;
  constructor(code: EngineErrorCode, message: string) {
    super(message);
    this.code = code;
    this.name = 'EngineError';
  }
  /** The numeric gRPC status code of the same name. */
  get grpcCode(): number {
    return GRPC_CODES[this.code];
  }
}
