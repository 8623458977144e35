// virtio-scsi controlq (virtio 1.2 §5.6.6.2): task management functions and
// asynchronous-notification query/subscribe.
//
// Our commands cannot be cancelled once started (the backend I/O is already
// issued), so an abort-class TMF waits for the affected tasks to finish — their
// own responses go out normally — and then answers FUNCTION COMPLETE. This is
// what SAM-5 §7.2 allows: the task is no longer in the task set when the TMF
// completes. QUERY TASK / QUERY TASK SET answer FUNCTION SUCCEEDED when a
// matching task exists and FUNCTION COMPLETE otherwise (SAM-5 §7.9, §7.10).
// CLEAR ACA is rejected (we never establish an ACA condition; NACA is unsupported).
// Asynchronous notification is not supported: event_actual is 0 (§5.6.6.2.2).
import { decodeLun, FramingError, Response } from './framing.ts';
import type { TargetLookup, TaskSet } from './tasks.ts';

/** controlq request types. */
export const ControlType = { TMF: 0, AN_QUERY: 1, AN_SUBSCRIBE: 2 } as const;

/** TMF subtypes (virtio 1.2 §5.6.6.2.1). */
export const TmfSubtype = {
  ABORT_TASK: 0,
  ABORT_TASK_SET: 1,
  CLEAR_ACA: 2,
  CLEAR_TASK_SET: 3,
  I_T_NEXUS_RESET: 4,
  LOGICAL_UNIT_RESET: 5,
  QUERY_TASK: 6,
  QUERY_TASK_SET: 7,
} as const;

/** struct virtio_scsi_ctrl_tmf_req: type, subtype, lun[8], id. */
export const TMF_REQ_SIZE = 4 + 4 + 8 + 8;
/** struct virtio_scsi_ctrl_tmf_resp: response. */
export const TMF_RESP_SIZE = 1;
/** struct virtio_scsi_ctrl_an_req: type, lun[8], event_requested. */
export const AN_REQ_SIZE = 4 + 8 + 4;
/** struct virtio_scsi_ctrl_an_resp: event_actual, response. */
export const AN_RESP_SIZE = 4 + 1;

/** A decoded TMF request. */
export interface TmfRequest {
  subtype: number;
  lunField: Buffer;
  tag: bigint;
}

/** Decodes a TMF request from a controlq chain's readable bytes. */
export function decodeTmfRequest(readable: Buffer): TmfRequest {
  if (readable.length < TMF_REQ_SIZE) throw new FramingError(`TMF request has ${readable.length} bytes, needs ${TMF_REQ_SIZE}`);
  return { subtype: readable.readUInt32LE(4), lunField: Buffer.from(readable.subarray(8, 16)), tag: readable.readBigUInt64LE(16) };
}

/** Encodes struct virtio_scsi_ctrl_an_resp. */
export function encodeAnResponse(eventActual: number, response: number): Buffer {
  const b = Buffer.alloc(AN_RESP_SIZE);
  b.writeUInt32LE(eventActual, 0);
  b[4] = response;
  return b;
}

export interface ControlContext {
  targets: TargetLookup;
  tasks: TaskSet;
}

/** Handles one controlq chain; resolves to the bytes to write into its
 * writable part. Throws FramingError for a chain too short for its request or
 * response, or of an unknown type (no response layout to answer with). */
export async function handleControlRequest(readable: Buffer, writableLength: number, ctx: ControlContext): Promise<Buffer> {
  if (readable.length < 4) throw new FramingError(`controlq request has ${readable.length} bytes, no type field`);
  const type = readable.readUInt32LE(0);
  switch (type) {
    case ControlType.TMF: {
      const req = decodeTmfRequest(readable);
      if (writableLength < TMF_RESP_SIZE) throw new FramingError('TMF chain has no room for the response');
      return Buffer.from([await runTmf(req, ctx)]);
    }
    case ControlType.AN_QUERY:
    case ControlType.AN_SUBSCRIBE: {
      if (readable.length < AN_REQ_SIZE) throw new FramingError(`AN request has ${readable.length} bytes, needs ${AN_REQ_SIZE}`);
      if (writableLength < AN_RESP_SIZE) throw new FramingError('AN chain has no room for the response');
      const addr = decodeLun(readable.subarray(4, 12));
      if (!addr.ok || !ctx.targets(addr.target)) return encodeAnResponse(0, Response.BAD_TARGET);
      return encodeAnResponse(0, Response.OK);
    }
    default:
      throw new FramingError(`controlq request type ${type} is undefined`);
  }
}

/** Runs one TMF and returns its response code. */
export async function runTmf(req: TmfRequest, ctx: ControlContext): Promise<number> {
  const addr = decodeLun(req.lunField);
  if (!addr.ok) return Response.BAD_TARGET;
  const port = ctx.targets(addr.target);
  if (!port) return Response.BAD_TARGET;
  const { target, lun } = addr;

  if (req.subtype === TmfSubtype.I_T_NEXUS_RESET) {
    // Addresses the target (lun[1]); the LUN bytes are not significant.
    await ctx.tasks.waitFor(ctx.tasks.find({ target }));
    port.resetNexus();
    return Response.FUNCTION_COMPLETE;
  }
  if (req.subtype === TmfSubtype.CLEAR_ACA) return Response.FUNCTION_REJECTED;
  if (req.subtype > TmfSubtype.QUERY_TASK_SET) return Response.FUNCTION_REJECTED;
  if (!port.hasLun(lun)) return Response.INCORRECT_LUN;

  switch (req.subtype) {
    case TmfSubtype.ABORT_TASK:
      await ctx.tasks.waitFor(ctx.tasks.find({ target, lun, tag: req.tag }));
      return Response.FUNCTION_COMPLETE;
    case TmfSubtype.QUERY_TASK:
      return ctx.tasks.find({ target, lun, tag: req.tag }).length > 0 ? Response.FUNCTION_SUCCEEDED : Response.FUNCTION_COMPLETE;
    case TmfSubtype.ABORT_TASK_SET:
    case TmfSubtype.CLEAR_TASK_SET:
      await ctx.tasks.waitFor(ctx.tasks.find({ target, lun }));
      return Response.FUNCTION_COMPLETE;
    case TmfSubtype.QUERY_TASK_SET:
      return ctx.tasks.find({ target, lun }).length > 0 ? Response.FUNCTION_SUCCEEDED : Response.FUNCTION_COMPLETE;
    case TmfSubtype.LOGICAL_UNIT_RESET:
      await ctx.tasks.waitFor(ctx.tasks.find({ target, lun }));
      port.resetLun(lun);
      return Response.FUNCTION_COMPLETE;
    default:
      return Response.FUNCTION_REJECTED;
  }
}
