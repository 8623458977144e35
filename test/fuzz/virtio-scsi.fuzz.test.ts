// Property-based fuzzing of virtio-scsi framing (virtio 1.2 §5.6.6.1 request
// queues, §5.6.6.2 controlq; hba/virtio-scsi/framing.ts, control.ts):
// arbitrary readable buffers and writable lengths. Decoders either decode or
// throw FramingError; encoders never write more than the chain's writable
// capacity; the controlq handler answers within its response layout.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ScsiTarget } from '../../hba/scsi/target.ts';
import { Status, type ScsiResult } from '../../hba/scsi/types.ts';
import { handleControlRequest, TMF_REQ_SIZE } from '../../hba/virtio-scsi/control.ts';
import {
  CMD_REQ_SIZE,
  CMD_RESP_SIZE,
  decodeCommandRequest,
  decodeLun,
  encodeLun,
  encodeScsiResult,
  FramingError,
  Response,
} from '../../hba/virtio-scsi/framing.ts';
import { TaskSet, type TargetPort } from '../../hba/virtio-scsi/tasks.ts';
import { fuzzParams } from './fuzz-settings.ts';

const bytes = (max: number) => fc.uint8Array({ maxLength: max }).map((a) => Buffer.from(a));
const writableLength = fc.oneof(fc.integer({ min: 0, max: 2 * CMD_RESP_SIZE }), fc.integer({ min: 0, max: 1 << 20 }),
  fc.constantFrom(-1, 0.5, Number.MAX_SAFE_INTEGER + 2, Number.NaN, 2 ** 32));

describe('virtio-scsi framing (fuzzed)', () => {
  it('decodeCommandRequest: FramingError exactly when shorter than the header; fields copied, data-out the rest', () => {
    fc.assert(
      fc.property(bytes(CMD_REQ_SIZE + 64), (readable) => {
        if (readable.length < CMD_REQ_SIZE) {
          expect(() => decodeCommandRequest(readable)).toThrow(FramingError);
          return;
        }
        const r = decodeCommandRequest(readable);
        expect(r.cdb.length).toBe(32);
        expect(r.lunField.length).toBe(8);
        expect(r.dataOut.length).toBe(readable.length - CMD_REQ_SIZE);
        const cdbBefore = Buffer.from(readable.subarray(19, CMD_REQ_SIZE));
        readable.fill(0xaa, 0, CMD_REQ_SIZE); // the header was copied: the guest rewriting it changes nothing
        expect(r.cdb.equals(cdbBefore)).toBe(true);
      }),
      fuzzParams(2000),
    );
  });

  it('decodeLun never throws on any 8 bytes and round-trips encodeLun', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 12 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 16383 }), (field, target, lun) => {
        const decoded = decodeLun(Buffer.from(field));
        if (field.length !== 8) expect(decoded.ok).toBe(false);
        expect(decodeLun(encodeLun(target, lun))).toEqual({ ok: true, target, lun });
      }),
      fuzzParams(2000),
    );
  });

  it('encodeScsiResult: never longer than the writable length, sense capped at 96, FramingError when the response cannot fit', () => {
    const result: fc.Arbitrary<ScsiResult> = fc.record(
      {
        status: fc.constantFrom(...Object.values(Status)),
        sense: bytes(200),
        dataIn: bytes(4096),
        dataOutConsumed: fc.integer({ min: 0, max: 1 << 20 }),
      },
      { requiredKeys: ['status'] },
    );
    fc.assert(
      fc.property(result, fc.integer({ min: 0, max: 1 << 20 }), writableLength, (r, dataOutLength, writable) => {
        let out: Buffer;
        try {
          out = encodeScsiResult(r, dataOutLength, writable);
        } catch (err) {
          expect(err).toBeInstanceOf(FramingError);
          expect(!Number.isSafeInteger(writable) || writable < CMD_RESP_SIZE).toBe(true);
          return;
        }
        expect(out.length).toBeLessThanOrEqual(writable);
        expect(out.length).toBeGreaterThanOrEqual(CMD_RESP_SIZE);
        expect(out.readUInt32LE(0)).toBeLessThanOrEqual(96);
        const capacity = writable - CMD_RESP_SIZE;
        if ((r.dataIn?.length ?? 0) > capacity) expect(out[11]).toBe(Response.OVERRUN);
        else expect(out.readUInt32LE(4)).toBeLessThanOrEqual(Math.max(capacity, dataOutLength));
      }),
      fuzzParams(3000),
    );
  });

  it('handleControlRequest: answers within the writable length or throws FramingError, for any bytes', async () => {
    const target = new ScsiTarget();
    const port: TargetPort = {
      execute: (lun, cmd) => target.execute(lun, cmd),
      hasLun: (lun) => lun === 0,
      resetLun: () => undefined,
      resetNexus: () => undefined,
    };
    const ctx = { targets: (t: number) => (t === 0 ? port : undefined), tasks: new TaskSet() };
    const typed = fc.tuple(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 12 }), bytes(TMF_REQ_SIZE + 8)).map(([type, subtype, rest]) => {
      const b = Buffer.alloc(4 + 4 + rest.length);
      b.writeUInt32LE(type, 0);
      b.writeUInt32LE(subtype, 4);
      rest.copy(b, 8);
      if (rest.length > 0 && rest[0]! % 2 === 0) encodeLun(0, rest[0]! % 3).copy(b, type === 0 ? 8 : 4);
      return b;
    });
    await fc.assert(
      fc.asyncProperty(fc.oneof(typed, bytes(40)), fc.integer({ min: 0, max: 16 }), async (readable, writable) => {
        let out: Buffer;
        try {
          out = await handleControlRequest(readable, writable, ctx);
        } catch (err) {
          expect(err).toBeInstanceOf(FramingError);
          return;
        }
        expect(out.length).toBeLessThanOrEqual(writable);
        expect(out.length).toBeGreaterThan(0);
      }),
      fuzzParams(2000),
    );
  });
});
