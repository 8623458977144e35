// PassthroughUnit over an in-memory device that records every command that
// reached it: what the guest sees is the device's, byte for byte, except our
// unit attention, the refused opcodes and the Block Limits clamp.
import { describe, expect, it } from 'vitest';
import { MemoryBackend } from '../backends/memory.ts';
import { LogicalUnit } from './logical-unit.ts';
import { REFUSED_OPCODES } from './passthrough-policy.ts';
import { PassthroughUnit, type ScsiDevicePort } from './passthrough-unit.ts';
import {
  buildFixedSense,
  decodeFixedSense,
  senseInvalidFieldInCdb,
  senseInvalidOpcode,
  senseMediumNotPresent,
  senseUaCapacityDataChanged,
  senseUaReportedLunsDataChanged,
} from './sense.ts';
import { ScsiTarget } from './target.ts';
import { codeOf, expected, run, testParams } from './testing.ts';
import { Status, type DeviceIdentity, type ScsiResult } from './types.ts';

/** One command as the device received it. */
interface Received {
  cdb: Buffer;
  dataOut: Buffer;
  dataInCapacity: number;
}

/** A device that records what reached it and answers with `respond`; a
 * GOOD with no data unless told otherwise. */
class RecordingDevice implements ScsiDevicePort {
  readonly received: Received[] = [];
  closed = false;
  respond: (cmd: Received) => ScsiResult | Promise<ScsiResult> = () => ({ status: Status.GOOD });
  async execute(cdb: Buffer, dataOut: Buffer, dataInCapacity: number): Promise<ScsiResult> {
    const cmd = { cdb: Buffer.from(cdb), dataOut: Buffer.from(dataOut), dataInCapacity };
    this.received.push(cmd);
    return this.respond(cmd);
  }
  close(): void {
    this.closed = true;
  }
  opcodes(): number[] {
    return this.received.map((c) => c.cdb[0]!);
  }
}

const IDENTITY: DeviceIdentity = {
  peripheralDeviceType: 0,
  vendor: 'LIO-ORG',
  product: 'fileio0',
  revision: '4.0',
  serial: 'abc',
  wwn: '6001405f2a1b3c4d5e6f708192a3b4c5',
  logicalBlockSize: 4096,
  physicalBlockSize: 4096,
  sizeBytes: 1 << 30,
};

function makeUnit(opts: { rawio?: boolean; maxTransferBytes?: number; identity?: Partial<DeviceIdentity> } = {}) {
  const device = new RecordingDevice();
  const unit = new PassthroughUnit(device, { ...IDENTITY, ...opts.identity }, { rawio: opts.rawio ?? false, maxTransferBytes: opts.maxTransferBytes ?? 0 });
  return { device, unit };
}

/** Random bytes, so a changed byte anywhere shows. */
function noise(length: number, seed: number): Buffer {
  const out = Buffer.alloc(length);
  let x = seed;
  for (let i = 0; i < length; i++) out[i] = x = (x * 1103515245 + 12345) & 0xff;
  return out;
}

const TUR = [0x00, 0, 0, 0, 0, 0];
const REQUEST_SENSE = [0x03, 0, 0, 0, 252, 0];
const INQUIRY = [0x12, 0, 0, 0, 96, 0];
const READ_CAPACITY_16 = [0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0];

/** Block Limits VPD page (SBC-3 §6.6.3): 64 bytes, MTL and OTL as given, other bytes noise. */
function blockLimitsPage(maxTransfer: number, optimalTransfer: number): Buffer {
  const page = noise(64, 7);
  page[0] = 0x00;
  page[1] = 0xb0;
  page.writeUInt16BE(0x3c, 2);
  page.writeUInt32BE(maxTransfer, 8);
  page.writeUInt32BE(optimalTransfer, 12);
  return page;
}

const inquiryB0 = (allocation = 64) => [0x12, 0x01, 0xb0, allocation >> 8, allocation & 0xff, 0];

describe('byte for byte', () => {
  it('INQUIRY, VPD pages, READ CAPACITY and MODE SENSE reach the device and come back unchanged', async () => {
    const { device, unit } = makeUnit();
    const cdbs = [INQUIRY, [0x12, 1, 0x00, 0, 255, 0], [0x12, 1, 0x80, 0, 255, 0], [0x12, 1, 0x83, 1, 0, 0], READ_CAPACITY_16, [0x5a, 0, 0x3f, 0, 0, 0, 0, 0x10, 0, 0]];
    for (const [i, cdb] of cdbs.entries()) {
      const data = noise(40 + i, i + 1);
      device.respond = () => ({ status: Status.GOOD, dataIn: data });
      const result = await run(unit, cdb, { dataInCapacity: 4096 });
      expect(result).toEqual({ status: Status.GOOD, dataIn: data });
      expect(device.received.at(-1)!.cdb.subarray(0, cdb.length)).toEqual(Buffer.from(cdb));
      expect(device.received.at(-1)!.dataInCapacity).toBe(4096);
    }
    expect(device.received).toHaveLength(cdbs.length);
  });

  it("the device's CHECK CONDITION and sense (and its own unit attentions) come back unchanged", async () => {
    const { device, unit } = makeUnit();
    const sense = Buffer.concat([buildFixedSense(senseUaCapacityDataChanged), noise(14, 3)]);
    device.respond = () => ({ status: Status.CHECK_CONDITION, sense });
    expect(await run(unit, TUR)).toEqual({ status: Status.CHECK_CONDITION, sense });
    device.respond = () => ({ status: Status.RESERVATION_CONFLICT });
    expect(await run(unit, [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], { dataInCapacity: 4096 })).toEqual({ status: Status.RESERVATION_CONFLICT });
  });

  it('writes carry the data-out bytes to the device', async () => {
    const { device, unit } = makeUnit();
    const data = noise(8192, 9);
    const result = await run(unit, [0x2a, 0, 0, 0, 0, 8, 0, 0, 2, 0], { dataOut: data, dataInCapacity: 0 });
    expect(result).toEqual({ status: Status.GOOD });
    expect(device.received[0]!.dataOut).toEqual(data);
    expect(device.received[0]!.dataInCapacity).toBe(0);
  });

  it('a service failure passes through, status and all', async () => {
    const { device, unit } = makeUnit();
    device.respond = () => ({ status: Status.GOOD, serviceFailure: 'transport-failure' });
    expect(await run(unit, TUR)).toEqual({ status: Status.GOOD, serviceFailure: 'transport-failure' });
    device.respond = () => ({ status: Status.GOOD, serviceFailure: 'bad-target' });
    expect((await run(unit, READ_CAPACITY_16, { dataInCapacity: 32 })).serviceFailure).toBe('bad-target');
    expect(unit.stats()).toEqual({ reads: 0, writes: 0, bytesRead: 0, bytesWritten: 0 });
  });

  it('data-in never longer than the initiator buffer, whatever the device returns', async () => {
    const { device, unit } = makeUnit();
    device.respond = () => ({ status: Status.GOOD, dataIn: noise(100, 5) });
    const result = await run(unit, INQUIRY, { dataInCapacity: 36 });
    expect(result.dataIn).toEqual(noise(100, 5).subarray(0, 36));
  });

  it('a port that rejects (against its contract) gives a service failure, not a rejection', async () => {
    const { device, unit } = makeUnit();
    device.respond = () => Promise.reject(new Error('boom'));
    expect(await run(unit, TUR)).toEqual({ status: Status.GOOD, serviceFailure: 'failure' });
    expect(unit.inFlight).toBe(0);
  });
});

describe('command policy', () => {
  it('every refused opcode gets ILLEGAL REQUEST / INVALID COMMAND OPERATION CODE and never reaches the device', async () => {
    const { device, unit } = makeUnit();
    for (const opcode of REFUSED_OPCODES.keys()) {
      const dataOut = opcode === 0x3b ? Buffer.alloc(4096, 0xee) : Buffer.alloc(0);
      expect(codeOf(await run(unit, [opcode, 0, 0, 0, 0, 0, 0, 0, 0, 0], { dataOut, dataInCapacity: 0 }))).toEqual(expected(senseInvalidOpcode));
    }
    expect(device.received).toEqual([]);
  });

  it('rawio lets them through', async () => {
    const { device, unit } = makeUnit({ rawio: true });
    const firmware = noise(4096, 11);
    const writeBuffer = [0x3b, 0x05, 0, 0, 0, 0, 0, 0x10, 0, 0]; // mode 05h: download microcode and save
    expect(await run(unit, writeBuffer, { dataOut: firmware, dataInCapacity: 0 })).toEqual({ status: Status.GOOD });
    expect(await run(unit, [0xc1, 0, 0, 0, 0, 0])).toEqual({ status: Status.GOOD });
    expect(device.opcodes()).toEqual([0x3b, 0xc1]);
    expect(device.received[0]!.dataOut).toEqual(firmware);
  });

  it('REPORT LUNS is never the device’s, rawio or not', async () => {
    const { device, unit } = makeUnit({ rawio: true });
    expect(codeOf(await run(unit, [0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]))).toEqual(expected(senseInvalidOpcode));
    expect(device.received).toEqual([]);
  });

  it('bidirectional commands get INVALID FIELD IN CDB and never reach the device', async () => {
    const { device, unit } = makeUnit({ rawio: true });
    const xdwriteread = [0x53, 0, 0, 0, 0, 0, 0, 0, 1, 0];
    expect(codeOf(await run(unit, xdwriteread, { dataOut: Buffer.alloc(512), dataInCapacity: 512 }))).toEqual(expected(senseInvalidFieldInCdb));
    expect(device.received).toEqual([]);
  });

  it('an empty CDB is INVALID COMMAND OPERATION CODE', async () => {
    const { device, unit } = makeUnit();
    expect(codeOf(await run(unit, Buffer.alloc(0)))).toEqual(expected(senseInvalidOpcode));
    expect(device.received).toEqual([]);
  });
});

describe('our unit attention (REPORTED LUNS DATA HAS CHANGED)', () => {
  it('is reported once, before the command reaches the device, then commands flow', async () => {
    const { device, unit } = makeUnit();
    unit.raiseReportedLunsChanged();
    unit.raiseReportedLunsChanged(); // not queued twice
    expect(unit.pendingUnitAttentions()).toEqual([senseUaReportedLunsDataChanged]);
    expect(codeOf(await run(unit, READ_CAPACITY_16, { dataInCapacity: 32 }))).toEqual(expected(senseUaReportedLunsDataChanged));
    expect(device.received).toEqual([]);
    expect(await run(unit, TUR)).toEqual({ status: Status.GOOD });
    expect(device.opcodes()).toEqual([0x00]);
  });

  it('comes before the command policy', async () => {
    const { device, unit } = makeUnit();
    unit.raiseReportedLunsChanged();
    expect(codeOf(await run(unit, [0x3b, 0, 0, 0, 0, 0, 0, 0, 0, 0]))).toEqual(expected(senseUaReportedLunsDataChanged));
    expect(codeOf(await run(unit, [0x3b, 0, 0, 0, 0, 0, 0, 0, 0, 0]))).toEqual(expected(senseInvalidOpcode));
    expect(device.received).toEqual([]);
  });

  it('INQUIRY runs with it pending (and leaves it pending)', async () => {
    const { device, unit } = makeUnit();
    unit.raiseReportedLunsChanged();
    const data = noise(96, 2);
    device.respond = () => ({ status: Status.GOOD, dataIn: data });
    expect(await run(unit, INQUIRY)).toEqual({ status: Status.GOOD, dataIn: data });
    expect(unit.pendingUnitAttentions()).toEqual([senseUaReportedLunsDataChanged]);
  });

  it('REQUEST SENSE returns it as sense data and clears it; afterwards REQUEST SENSE is the device’s', async () => {
    const { device, unit } = makeUnit();
    unit.raiseReportedLunsChanged();
    const rs = await run(unit, REQUEST_SENSE);
    expect(rs.status).toBe(Status.GOOD);
    expect(decodeFixedSense(rs.dataIn!)).toMatchObject(expected(senseUaReportedLunsDataChanged));
    expect(unit.pendingUnitAttentions()).toEqual([]);
    expect(device.received).toEqual([]);
    const deviceSense = buildFixedSense(senseMediumNotPresent);
    device.respond = () => ({ status: Status.GOOD, dataIn: deviceSense });
    expect(await run(unit, REQUEST_SENSE)).toEqual({ status: Status.GOOD, dataIn: deviceSense });
    expect(device.opcodes()).toEqual([0x03]);
  });

  it('REQUEST SENSE honours DESC and the allocation length', async () => {
    const { unit } = makeUnit();
    unit.raiseReportedLunsChanged();
    expect((await run(unit, [0x03, 0x01, 0, 0, 252, 0])).dataIn).toEqual(Buffer.from([0x72, 0x06, 0x3f, 0x0e, 0, 0, 0, 0]));
    unit.raiseReportedLunsChanged();
    expect((await run(unit, [0x03, 0, 0, 0, 8, 0])).dataIn).toEqual(buildFixedSense(senseUaReportedLunsDataChanged).subarray(0, 8));
  });

  it('clearUnitAttention and reset() drop it; the device is not reset', async () => {
    const { device, unit } = makeUnit();
    unit.raiseReportedLunsChanged();
    unit.clearUnitAttention({ asc: 0x2a, ascq: 0x09 }); // not ours: nothing happens
    expect(unit.pendingUnitAttentions()).toHaveLength(1);
    unit.clearUnitAttention({ asc: 0x3f, ascq: 0x0e });
    expect(unit.pendingUnitAttentions()).toEqual([]);
    unit.raiseReportedLunsChanged();
    unit.reset();
    expect(unit.pendingUnitAttentions()).toEqual([]);
    expect(await run(unit, TUR)).toEqual({ status: Status.GOOD });
    expect(device.opcodes()).toEqual([0x00]);
  });

  it('tells the observer whenever the queue changes, and only then', async () => {
    const { unit } = makeUnit();
    let changes = 0;
    unit.setObserver({ stateChanged: () => changes++ });
    unit.raiseReportedLunsChanged();
    expect(changes).toBe(1);
    unit.raiseReportedLunsChanged();
    expect(changes).toBe(1);
    await run(unit, TUR); // reports it
    expect(changes).toBe(2);
    await run(unit, TUR);
    unit.reset();
    unit.clearUnitAttention({ asc: 0x3f, ascq: 0x0e });
    expect(changes).toBe(2);
    unit.raiseReportedLunsChanged();
    unit.clearUnitAttention({ asc: 0x3f, ascq: 0x0e });
    unit.raiseReportedLunsChanged();
    unit.reset();
    expect(changes).toBe(6);
  });

  it('in a ScsiTarget next to an emulated disk: attach raises it, REPORT LUNS clears it, the device never sees REPORT LUNS', async () => {
    const { device, unit } = makeUnit();
    const target = new ScsiTarget();
    target.attach(0, unit);
    target.attach(1, new LogicalUnit(testParams, new MemoryBackend(1 << 20)));
    expect(unit.pendingUnitAttentions()).toEqual([senseUaReportedLunsDataChanged]);
    const luns = await target.execute(0, { cdb: Buffer.from([0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]), dataOut: Buffer.alloc(0), dataInCapacity: 256, tag: 1n });
    expect(luns.status).toBe(Status.GOOD);
    expect(luns.dataIn!.readUInt32BE(0)).toBe(16); // two LUNs
    expect(unit.pendingUnitAttentions()).toEqual([]);
    expect(device.received).toEqual([]);
    expect(target.get(0)).toBe(unit);
    expect(target.detach(0)).toBe(unit);
  });
});

describe('Block Limits (INQUIRY VPD B0h)', () => {
  /** Runs INQUIRY B0h against a device answering `page`; the device's buffer must stay untouched. */
  async function blockLimits(unitOpts: Parameters<typeof makeUnit>[0], page: Buffer, allocation = 64): Promise<Buffer> {
    const { device, unit } = makeUnit(unitOpts);
    const original = Buffer.from(page);
    device.respond = (cmd) => ({ status: Status.GOOD, dataIn: page.subarray(0, cmd.dataInCapacity) });
    const result = await run(unit, inquiryB0(allocation), { dataInCapacity: allocation });
    expect(page).toEqual(original);
    expect(device.opcodes()).toEqual([0x12]);
    return result.dataIn!;
  }

  /** The page with only bytes 8..15 replaced. */
  function withLimits(page: Buffer, max: number, optimal: number): Buffer {
    const out = Buffer.from(page);
    out.writeUInt32BE(max, 8);
    out.writeUInt32BE(optimal, 12);
    return out;
  }

  it('lowers MAXIMUM TRANSFER LENGTH to the host limit in logical blocks; every other byte is the device’s', async () => {
    const page = blockLimitsPage(0xffff, 8); // device: 256 MiB at 4096 bytes
    expect(await blockLimits({ maxTransferBytes: 1 << 20 }, page)).toEqual(withLimits(page, 256, 8));
  });

  it('an unlimited device (0) gets the host limit', async () => {
    const page = blockLimitsPage(0, 0);
    expect(await blockLimits({ maxTransferBytes: 512 << 10 }, page)).toEqual(withLimits(page, 128, 0));
    expect(await blockLimits({ maxTransferBytes: 512 << 10, identity: { logicalBlockSize: 512 } }, page)).toEqual(withLimits(page, 1024, 0));
  });

  it('a device limit below the host limit stays', async () => {
    const page = blockLimitsPage(64, 16);
    expect(await blockLimits({ maxTransferBytes: 1 << 20 }, page)).toEqual(page);
  });

  it('OPTIMAL TRANSFER LENGTH is lowered to the maximum, never raised', async () => {
    const page = blockLimitsPage(1024, 512);
    expect(await blockLimits({ maxTransferBytes: 1 << 20 }, page)).toEqual(withLimits(page, 256, 256));
  });

  it('a host limit below one block still allows one block', async () => {
    const page = blockLimitsPage(0, 0);
    expect(await blockLimits({ maxTransferBytes: 1000 }, page)).toEqual(withLimits(page, 1, 0));
  });

  it('no host limit: the page is the device’s', async () => {
    const page = blockLimitsPage(0xffff, 8);
    expect(await blockLimits({ maxTransferBytes: 0 }, page)).toEqual(page);
  });

  it('a page cut short by the allocation length is clamped where present', async () => {
    const page = blockLimitsPage(0xffff, 0xffff);
    expect(await blockLimits({ maxTransferBytes: 1 << 20 }, page, 14)).toEqual(withLimits(page, 256, 0xffff).subarray(0, 14));
    expect(await blockLimits({ maxTransferBytes: 1 << 20 }, page, 8)).toEqual(page.subarray(0, 8));
  });

  it('other pages, standard INQUIRY and a failed B0h are untouched', async () => {
    const { device, unit } = makeUnit({ maxTransferBytes: 4096 });
    const page = blockLimitsPage(0xffff, 0xffff);
    device.respond = () => ({ status: Status.GOOD, dataIn: page });
    expect((await run(unit, [0x12, 0x01, 0xb1, 0, 64, 0], { dataInCapacity: 64 })).dataIn).toEqual(page);
    expect((await run(unit, [0x12, 0x00, 0x00, 0, 64, 0], { dataInCapacity: 64 })).dataIn).toEqual(page);
    const sense = buildFixedSense(senseInvalidFieldInCdb);
    device.respond = () => ({ status: Status.CHECK_CONDITION, sense });
    expect(await run(unit, inquiryB0(), { dataInCapacity: 64 })).toEqual({ status: Status.CHECK_CONDITION, sense });
  });
});

describe('lifecycle and counters', () => {
  it('counts JS-path commands by direction, plus what the observer reports', async () => {
    const { device, unit } = makeUnit();
    device.respond = (cmd) => ({ status: Status.GOOD, dataIn: cmd.dataInCapacity ? Buffer.alloc(cmd.dataInCapacity - 100) : undefined });
    await run(unit, [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], { dataInCapacity: 4096 });
    await run(unit, [0x2a, 0, 0, 0, 0, 0, 0, 0, 2, 0], { dataOut: Buffer.alloc(8192), dataInCapacity: 0 });
    await run(unit, TUR, { dataInCapacity: 0 });
    device.respond = () => ({ status: Status.CHECK_CONDITION, sense: buildFixedSense(senseMediumNotPresent) });
    await run(unit, [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], { dataInCapacity: 4096 }); // failed: not counted
    expect(unit.stats()).toEqual({ reads: 1, writes: 1, bytesRead: 3996, bytesWritten: 8192 });
    unit.setObserver({ stateChanged: () => {}, externalStats: () => ({ reads: 10, writes: 20, bytesRead: 1000, bytesWritten: 2000 }) });
    expect(unit.stats()).toEqual({ reads: 11, writes: 21, bytesRead: 4996, bytesWritten: 10192 });
  });

  it('close() waits for running commands, leaves the port open, and later commands get BAD TARGET', async () => {
    const { device, unit } = makeUnit();
    let finish!: () => void;
    device.respond = () => new Promise((resolve) => (finish = () => resolve({ status: Status.GOOD })));
    const running = run(unit, TUR);
    await Promise.resolve();
    expect(unit.inFlight).toBe(1);
    let closed = false;
    const closing = unit.close().then(() => (closed = true));
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(closed).toBe(false);
    expect(await run(unit, TUR)).toEqual({ status: Status.GOOD, serviceFailure: 'bad-target' });
    finish();
    expect(await running).toEqual({ status: Status.GOOD });
    await closing;
    expect(unit.inFlight).toBe(0);
    expect(device.closed).toBe(false);
    expect(device.received).toHaveLength(1);
  });

  it('exposes the identity it was given, frozen', () => {
    const { unit } = makeUnit();
    expect(unit.identity).toEqual(IDENTITY);
    expect(Object.isFrozen(unit.identity)).toBe(true);
  });

  it('refuses a bad host limit', () => {
    expect(() => new PassthroughUnit(new RecordingDevice(), IDENTITY, { rawio: false, maxTransferBytes: -1 })).toThrow(RangeError);
    expect(() => new PassthroughUnit(new RecordingDevice(), IDENTITY, { rawio: false, maxTransferBytes: 1.5 })).toThrow(RangeError);
  });
});
