// virtio-scsi request queue framing (virtio 1.2 §5.6.6.1): the command request
// header and data-out come from the chain's device-readable part, the response
// header and data-in go into its device-writable part.
//
// Malformed chains (decided here, documented once): a chain whose writable part
// cannot hold the 108-byte response, or whose readable part cannot hold the
// 51-byte request header, breaks the driver requirements of §5.6.6.1 ("The
// driver MUST ... place the request header ... and the response") and there
// is no way to report a per-request error for it; QEMU marks its device broken
// in that case. We treat it as a protocol violation: the connection is closed.
// Well-formed requests with bad content (LUN format, absent target) get a
// response code.
import type { ScsiResult, ServiceFailure } from '../scsi/types.ts';
import { CDB_SIZE, MAX_LUN, SENSE_SIZE } from './config.ts';

/** Size of struct virtio_scsi_cmd_req with cdb_size 32. */
export const CMD_REQ_SIZE = 8 + 8 + 1 + 1 + 1 + CDB_SIZE;
/** Size of struct virtio_scsi_cmd_resp with sense_size 96. */
export const CMD_RESP_SIZE = 4 + 4 + 2 + 1 + 1 + SENSE_SIZE;

/** Response codes (virtio 1.2 §5.6.6.1 and §5.6.6.2). */
export const Response = {
  OK: 0,
  /** Same value as OK: the TMF completed. */
  FUNCTION_COMPLETE: 0,
  OVERRUN: 1,
  ABORTED: 2,
  BAD_TARGET: 3,
  RESET: 4,
  BUSY: 5,
  TRANSPORT_FAILURE: 6,
  TARGET_FAILURE: 7,
  NEXUS_FAILURE: 8,
  FAILURE: 9,
  FUNCTION_SUCCEEDED: 10,
  FUNCTION_REJECTED: 11,
  INCORRECT_LUN: 12,
} as const;

/** The response code of each SAM-5 service failure a target can report
 * (virtio 1.2 §5.6.6.1: BAD_TARGET "the target does not exist", ABORTED,
 * BUSY "retry", RESET, TRANSPORT_FAILURE "the request failed due to a problem
 * in the connection between the host and the target", TARGET_FAILURE,
 * NEXUS_FAILURE, FAILURE "any other error"). */
export const SERVICE_FAILURE_RESPONSE: Readonly<Record<ServiceFailure, number>> = Object.freeze({
  'bad-target': Response.BAD_TARGET,
  'transport-failure': Response.TRANSPORT_FAILURE,
  aborted: Response.ABORTED,
  busy: Response.BUSY,
  reset: Response.RESET,
  'target-failure': Response.TARGET_FAILURE,
  'nexus-failure': Response.NEXUS_FAILURE,
  failure: Response.FAILURE,
});

/** task_attr values (virtio 1.2 §5.6.6.1). */
export const TaskAttr = { SIMPLE: 0, ORDERED: 1, HEAD: 2, ACA: 3 } as const;

/** A chain the driver framed wrongly: the owner closes the connection. */
export class FramingError extends Error {
  override name = 'FramingError';
}

/** A decoded LUN field: either an address or the reason it is not one. */
export type LunAddress = { ok: true; target: number; lun: number } | { ok: false; reason: string };

/** Decodes the 8-byte LUN field (virtio 1.2 §5.6.6.1): byte 0 = 1, byte 1 =
 * target, bytes 2-3 = single-level LUN (peripheral addressing for LUN < 256,
 * flat space addressing, 0x40 in byte 2, for any LUN), bytes 4-7 zero. */
export function decodeLun(field: Buffer): LunAddress {
  if (field.length !== 8) return { ok: false, reason: `LUN field is ${field.length} bytes` };
  if (field[0] !== 1) return { ok: false, reason: `LUN byte 0 is ${field[0]}, not 1` };
  const target = field[1]!;
  const b2 = field[2]!;
  const b3 = field[3]!;
  let lun: number;
  if (b2 === 0) lun = b3; // peripheral device addressing, bus 0
  else if ((b2 & 0xc0) === 0x40) lun = ((b2 & 0x3f) << 8) | b3; // flat space addressing
  else return { ok: false, reason: `LUN bytes 2-3 0x${b2.toString(16)}${b3.toString(16).padStart(2, '0')} use an unsupported addressing method` };
  if (field.readUInt32LE(4) !== 0) return { ok: false, reason: 'LUN bytes 4-7 are not zero' };
  if (lun > MAX_LUN) return { ok: false, reason: `LUN ${lun} exceeds ${MAX_LUN}` };
  return { ok: true, target, lun };
}

/** Encodes a LUN field the way Linux's virtio_scsi does (flat addressing, 0x40 flag). */
export function encodeLun(target: number, lun: number): Buffer {
  const b = Buffer.alloc(8);
  b[0] = 1;
  b[1] = target;
  b.writeUInt16BE(0x4000 | lun, 2);
  return b;
}

/** A decoded virtio_scsi_cmd_req. */
export interface CommandRequest {
  lunField: Buffer;
  tag: bigint;
  taskAttr: number;
  prio: number;
  crn: number;
  /** The full 32-byte CDB area, copied. */
  cdb: Buffer;
  /** Data-out bytes following the header (a view of the chain's own copy). */
  dataOut: Buffer;
}

/** Splits a chain's readable bytes into request header and data-out. The
 * native layer already copied them out of guest memory once; the header
 * fields are copied again here so nothing aliases the chain buffer. */
export function decodeCommandRequest(readable: Buffer): CommandRequest {
  if (readable.length < CMD_REQ_SIZE) throw new FramingError(`request chain has ${readable.length} readable bytes, the header needs ${CMD_REQ_SIZE}`);
  return {
    lunField: Buffer.from(readable.subarray(0, 8)),
    tag: readable.readBigUInt64LE(8),
    taskAttr: readable[16]!,
    prio: readable[17]!,
    crn: readable[18]!,
    cdb: Buffer.from(readable.subarray(19, CMD_REQ_SIZE)),
    dataOut: readable.subarray(CMD_REQ_SIZE),
  };
}

/** Checks the writable part can hold the response; returns the data-in capacity. */
export function dataInCapacity(writableLength: number): number {
  if (!Number.isSafeInteger(writableLength) || writableLength < CMD_RESP_SIZE) {
    throw new FramingError(`request chain has ${writableLength} writable bytes, the response needs ${CMD_RESP_SIZE}`);
  }
  return writableLength - CMD_RESP_SIZE;
}

/** Fields of virtio_scsi_cmd_resp (virtio 1.2 §5.6.6.1). */
export interface CommandResponse {
  response: number;
  status: number;
  statusQualifier: number;
  resid: number;
  sense: Buffer;
}

/** Encodes response header + data-in into one buffer of at most writableLength bytes. */
export function encodeCommandResponse(r: CommandResponse, dataIn: Buffer | undefined, writableLength: number): Buffer {
  const capacity = dataInCapacity(writableLength);
  const dataLength = dataIn ? Math.min(dataIn.length, capacity) : 0;
  const out = Buffer.alloc(CMD_RESP_SIZE + dataLength);
  const senseLength = Math.min(r.sense.length, SENSE_SIZE);
  out.writeUInt32LE(senseLength, 0);
  out.writeUInt32LE(r.resid >>> 0, 4);
  out.writeUInt16LE(r.statusQualifier, 8);
  out[10] = r.status;
  out[11] = r.response;
  r.sense.copy(out, 12, 0, senseLength);
  if (dataIn && dataLength > 0) dataIn.copy(out, CMD_RESP_SIZE, 0, dataLength);
  return out;
}

/** A response carrying only a response code (no SCSI status): BAD_TARGET etc. */
export function encodeTransportResponse(response: number, writableLength: number): Buffer {
  return encodeCommandResponse({ response, status: 0, statusQualifier: 0, resid: 0, sense: Buffer.alloc(0) }, undefined, writableLength);
}

/** Turns the target's ScsiResult into the response buffer. Residual (§5.6.6.1
 * "resid"): for data-in, capacity minus bytes transferred; for data-out, bytes
 * not consumed. Data-in longer than the capacity (a target bug; the contract
 * forbids it) is truncated and answered with OVERRUN. A command that did not
 * complete (result.serviceFailure: a passthrough device gone, timed out, its
 * transport broken) gets that failure's response code, status 0, no sense,
 * no data and the whole transfer as residual: status, sense and resid are
 * meaningful only with response OK (§5.6.6.1). */
export function encodeScsiResult(result: ScsiResult, dataOutLength: number, writableLength: number): Buffer {
  const capacity = dataInCapacity(writableLength);
  if (result.serviceFailure !== undefined) {
    const response = SERVICE_FAILURE_RESPONSE[result.serviceFailure] ?? Response.FAILURE;
    const resid = capacity > 0 ? capacity : dataOutLength;
    return encodeCommandResponse({ response, status: 0, statusQualifier: 0, resid, sense: Buffer.alloc(0) }, undefined, writableLength);
  }
  const dataIn = result.dataIn;
  let response: number = Response.OK;
  let resid = 0;
  if (dataIn && dataIn.length > capacity) response = Response.OVERRUN;
  else if (capacity > 0) resid = capacity - (dataIn?.length ?? 0);
  else if (dataOutLength > 0) {
    const consumed = Math.min(result.dataOutConsumed ?? dataOutLength, dataOutLength);
    resid = dataOutLength - Math.max(0, consumed);
  }
  return encodeCommandResponse({ response, status: result.status, statusQualifier: 0, resid, sense: result.sense ?? Buffer.alloc(0) }, dataIn, writableLength);
}
