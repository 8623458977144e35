// hba/backends/passthrough-port.ts: CDB lengths by group code, response codes
// to service failures, residuals to data-in / data-out consumed, and the port
// over an in-memory device.
import { describe, expect, it } from 'vitest';
import type { PassthroughOutcome } from '../native/index.ts';
import type { ServiceFailure } from '../scsi/types.ts';
import { Response } from '../virtio-scsi/framing.ts';
import { FakePassthroughDevice } from './fake-passthrough-device.ts';
import { cdbLengthOf, PassthroughPort, resultOfOutcome, serviceFailureOfResponse } from './passthrough-port.ts';

function cdb(...bytes: number[]): Buffer {
  const b = Buffer.alloc(32);
  b.set(bytes);
  return b;
}

function outcome(over: Partial<PassthroughOutcome>): PassthroughOutcome {
  return { response: 0, status: 0, sense: Buffer.alloc(0), dataIn: Buffer.alloc(0), residual: 0, error: '', ...over };
}

describe('cdbLengthOf (SPC-4 §4.2.5.1)', () => {
  it.each([
    [0x00, 6], [0x12, 6], [0x28, 10], [0x5e, 10], [0x85, 16], [0x88, 16], [0x9e, 16], [0xa0, 12], [0xa3, 12],
  ])('opcode %i → %i bytes', (opcode, length) => {
    expect(cdbLengthOf(cdb(opcode))).toBe(length);
  });
  it('variable length 7Fh: ADDITIONAL CDB LENGTH + 8, at most the CDB area', () => {
    expect(cdbLengthOf(cdb(0x7f, 0, 0, 0, 0, 0, 0, 24))).toBe(32);
    expect(cdbLengthOf(cdb(0x7f, 0, 0, 0, 0, 0, 0, 25))).toBeUndefined();
  });
  it('reserved group 3 and vendor-specific groups 6 and 7 have no known length', () => {
    for (const op of [0x60, 0x7e, 0xc0, 0xff]) expect(cdbLengthOf(cdb(op))).toBeUndefined();
    expect(cdbLengthOf(Buffer.alloc(0))).toBeUndefined();
    expect(cdbLengthOf(Buffer.from([0x88, 0, 0, 0, 0, 0, 0, 0, 0, 0]))).toBeUndefined(); // 16-byte opcode in a 10-byte buffer
  });
});

describe('service failures (virtio 1.2 §5.6.6.1)', () => {
  it.each([
    [Response.BAD_TARGET, 'bad-target'], [Response.TRANSPORT_FAILURE, 'transport-failure'], [Response.ABORTED, 'aborted'],
    [Response.BUSY, 'busy'], [Response.RESET, 'reset'], [Response.TARGET_FAILURE, 'target-failure'],
    [Response.NEXUS_FAILURE, 'nexus-failure'], [Response.FAILURE, 'failure'], [Response.OVERRUN, 'failure'], [Response.INCORRECT_LUN, 'failure'], [200, 'failure'],
  ] as [number, ServiceFailure][])('response %i → %s', (response, failure) => {
    expect(serviceFailureOfResponse(response)).toBe(failure);
    expect(resultOfOutcome(outcome({ response, status: 2, sense: Buffer.alloc(18) }), 0, 512)).toEqual({ serviceFailure: failure, status: 0 });
  });
  it('OK is no failure', () => {
    expect(serviceFailureOfResponse(Response.OK)).toBeUndefined();
  });
});

describe('resultOfOutcome', () => {
  it('data-in: what was transferred (capacity - residual); status and sense as the device gave them', () => {
    const sense = Buffer.from([0x70, 0, 3, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x11, 0]);
    const r = resultOfOutcome(outcome({ status: 2, sense, dataIn: Buffer.alloc(100, 7), residual: 412 }), 0, 512);
    expect(r.status).toBe(2);
    expect(r.sense).toEqual(sense);
    expect(r.dataIn!.length).toBe(100);
    expect(resultOfOutcome(outcome({ dataIn: Buffer.alloc(512), residual: 600 }), 0, 512).dataIn!.length).toBe(0); // residual beyond the transfer
  });
  it('data-out: consumed = length - residual', () => {
    expect(resultOfOutcome(outcome({ residual: 1024 }), 4096, 0)).toEqual({ status: 0, dataOutConsumed: 3072 });
    expect(resultOfOutcome(outcome({ residual: -5 }), 4096, 0)).toEqual({ status: 0, dataOutConsumed: 4096 });
  });
});

describe('PassthroughPort', () => {
  it('sends the CDB at its own length with the direction and timeout', async () => {
    const device = new FakePassthroughDevice();
    const seen: { length: number; options: unknown }[] = [];
    const execute = device.execute.bind(device);
    device.execute = (c, o) => {
      seen.push({ length: c.length, options: o });
      return execute(c, o);
    };
    const port = new PassthroughPort(device, { timeoutMs: 777 });
    const r = await port.execute(cdb(0x12, 0, 0, 0, 36, 0), Buffer.alloc(0), 36);
    expect(r.dataIn!.equals(device.standardInquiry())).toBe(true);
    await port.execute(cdb(0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0), Buffer.alloc(512, 1), 0);
    expect(seen).toEqual([
      { length: 6, options: { timeoutMs: 777, dataInLength: 36 } },
      { length: 10, options: { timeoutMs: 777, dataOut: Buffer.alloc(512, 1) } },
    ]);
  });

  it('answers a CDB of unknown length itself, and never rejects', async () => {
    const device = new FakePassthroughDevice();
    const failures: string[] = [];
    const port = new PassthroughPort(device, { timeoutMs: 1000, onServiceFailure: (f, e) => failures.push(`${f}: ${e}`) });
    const vendor = await port.execute(cdb(0xc1), Buffer.alloc(0), 0);
    expect(vendor.status).toBe(2);
    expect(vendor.sense![12]).toBe(0x20);
    expect(device.received).toEqual([]);
    device.execute = () => Promise.reject(new Error('bad arguments'));
    expect(await port.execute(cdb(0x00), Buffer.alloc(0), 0)).toEqual({ serviceFailure: 'failure', status: 0 });
    port.close();
    expect(device.closed).toBe(true);
    expect(await port.execute(cdb(0x00), Buffer.alloc(0), 0)).toEqual({ serviceFailure: 'bad-target', status: 0 });
    port.close(); // idempotent
    expect(failures).toEqual(['failure: bad arguments']);
  });

  it('reports a device failure with the native error text', async () => {
    const device = new FakePassthroughDevice();
    const failures: string[] = [];
    const port = new PassthroughPort(device, { timeoutMs: 1000, onServiceFailure: (f, e, op) => failures.push(`${f} ${op}: ${e}`) });
    device.failNext(Response.TRANSPORT_FAILURE);
    expect(await port.execute(cdb(0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0), Buffer.alloc(0), 512)).toEqual({ serviceFailure: 'transport-failure', status: 0 });
    expect(failures).toEqual(['transport-failure 40: injected failure']);
    expect(() => new PassthroughPort(device, { timeoutMs: 0 })).toThrow(RangeError);
  });
});
