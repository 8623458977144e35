// Property-based fuzzing of every SCSI command handler (SPC-4, SBC-3) through
// ScsiTarget → LogicalUnit over a MemoryBackend: sequences of commands with
// structured CDBs (LBAs and lengths at the edges: 0, capacity, 2^32, 2^64-1),
// parameter lists (MODE SELECT with odd block descriptors and pages, UNMAP
// with huge descriptor counts) and arbitrary bytes, on LUNs that exist or not.
// Extends the single-command property in hba/scsi/logical-unit.test.ts with
// state (MODE SELECT, resize, UNMAP then READ) and a backend that checks every
// access. Properties: execute never rejects; the status is a SAM-5 status;
// CHECK CONDITION carries well-formed fixed sense; data-in never exceeds the
// allocation; data-out consumed never exceeds what was sent; the backend is
// never asked for anything outside the disk.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MemoryBackend } from '../../hba/backends/memory.ts';
import { LogicalUnit } from '../../hba/scsi/logical-unit.ts';
import { decodeFixedSense } from '../../hba/scsi/sense.ts';
import { ScsiTarget } from '../../hba/scsi/target.ts';
import { testParams } from '../../hba/scsi/testing.ts';
import { Status, type BlockBackend, type ScsiResult } from '../../hba/scsi/types.ts';
import { fuzzParams } from './fuzz-settings.ts';

/** A MemoryBackend that records every call outside [0, size) or with non-integer arguments. */
class CheckedBackend implements BlockBackend {
  readonly inner: MemoryBackend;
  readonly violations: string[] = [];
  constructor(bytes: number) {
    this.inner = new MemoryBackend(bytes);
  }
  #check(op: string, offset: number, length: number): void {
    const size = this.inner.size();
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > size) {
      this.violations.push(`${op} [${offset}, +${length}) outside ${size}`);
    }
  }
  size(): number { return this.inner.size(); }
  read(offset: number, length: number): Promise<Buffer> { this.#check('read', offset, length); return this.inner.read(offset, length); }
  write(offset: number, data: Buffer, fua: boolean): Promise<void> { this.#check('write', offset, data.length); return this.inner.write(offset, data, fua); }
  flush(): Promise<void> { return this.inner.flush(); }
  discard(offset: number, length: number): Promise<void> { this.#check('discard', offset, length); return this.inner.discard(offset, length); }
  writeZeroes(offset: number, length: number): Promise<void> { this.#check('writeZeroes', offset, length); return this.inner.writeZeroes(offset, length); }
  resize(bytes: number): Promise<void> { return this.inner.resize(bytes); }
  close(): Promise<void> { return this.inner.close(); }
}

const DISK_BYTES = 1 << 20; // 2048 blocks of 512
const KNOWN_OPCODES = [0x00, 0x03, 0x08, 0x0a, 0x12, 0x15, 0x1a, 0x1b, 0x1e, 0x25, 0x28, 0x2a, 0x2e, 0x2f, 0x35, 0x41, 0x42,
  0x55, 0x5a, 0x88, 0x8a, 0x8e, 0x8f, 0x91, 0x93, 0x9e, 0xa0, 0xa3, 0xa8, 0xaa];
const SAM_STATUSES = new Set<number>(Object.values(Status));

const lba64 = fc.oneof(
  fc.constantFrom(0n, 1n, 2047n, 2048n, 2049n, 4095n, 0xffffffffn, 0x100000000n, (1n << 63n), (1n << 64n) - 1n, (1n << 64n) - 2048n),
  fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
);
const len32 = fc.oneof(fc.constantFrom(0, 1, 2, 8, 2048, 0xffff, 0x10000, 0xffffffff), fc.integer({ min: 0, max: 0xffffffff }));
const bytes = (max: number) => fc.uint8Array({ maxLength: max }).map((a) => Buffer.from(a));

/** CDBs for the block commands with LBA/length fields at the edges (SBC-3 §5). */
const blockCdb = fc.tuple(fc.constantFrom(0x28, 0x2a, 0x2f, 0x41, 0x88, 0x8a, 0x8f, 0x93, 0x35, 0x91, 0x08, 0x0a), lba64, len32, fc.integer({ min: 0, max: 255 }))
  .map(([op, lba, len, flags]) => {
    const cdb = Buffer.alloc(32);
    cdb[0] = op;
    cdb[1] = flags & 0xff & (flags & 1 ? 0xff : 0x1e); // mostly legal bits, sometimes anything
    if (op === 0x08 || op === 0x0a) { cdb.writeUIntBE(Number(lba & 0x1fffffn), 1, 3); cdb[4] = len & 0xff; }
    else if (op >= 0x80) { cdb.writeBigUInt64BE(lba, 2); cdb.writeUInt32BE(len >>> 0, 10); }
    else { cdb.writeUInt32BE(Number(lba & 0xffffffffn), 2); cdb.writeUInt16BE(len & 0xffff, 7); }
    return cdb;
  });

/** MODE SELECT(6/10) with a block descriptor (block length at the edges) and a caching page (SPC-4 §6.11, §7.5). */
const modeSelect = fc.tuple(fc.boolean(), fc.constantFrom(0, 1, 256, 512, 520, 1024, 4096, 0xffffff), fc.boolean(), fc.boolean(), fc.integer({ min: 0, max: 0x11 }), fc.integer({ min: 0, max: 255 }))
  .map(([ten, blockLength, withDescriptor, wce, pf, junk]) => {
    const descriptor = Buffer.alloc(withDescriptor ? 8 : 0);
    if (withDescriptor) descriptor.writeUIntBE(blockLength, 5, 3);
    const page = Buffer.from([0x08, 0x12, wce ? 0x04 : 0, ...Array(17).fill(junk % 3 === 0 ? junk : 0)]);
    const header = ten ? Buffer.alloc(8) : Buffer.alloc(4);
    if (ten) header.writeUInt16BE(descriptor.length, 6); else header[3] = descriptor.length;
    const list = Buffer.concat([header, descriptor, page]);
    const cdb = Buffer.alloc(32);
    cdb[0] = ten ? 0x55 : 0x15;
    cdb[1] = pf;
    if (ten) cdb.writeUInt16BE(list.length, 7); else cdb[4] = list.length;
    return { cdb, dataOut: list };
  });

/** UNMAP with descriptors whose LBA/count are at the edges, and lying list lengths (SBC-3 §5.28). */
const unmap = fc.tuple(fc.array(fc.tuple(lba64, len32), { maxLength: 6 }), fc.integer({ min: -16, max: 16 }), fc.boolean())
  .map(([descriptors, lie, lieInCdb]) => {
    const list = Buffer.alloc(8 + 16 * descriptors.length);
    list.writeUInt16BE(Math.max(0, 6 + 16 * descriptors.length + (lieInCdb ? 0 : lie)) & 0xffff, 0);
    list.writeUInt16BE(Math.max(0, 16 * descriptors.length + (lieInCdb ? 0 : lie)) & 0xffff, 2);
    descriptors.forEach(([lba, count], i) => { list.writeBigUInt64BE(lba, 8 + 16 * i); list.writeUInt32BE(count >>> 0, 16 + 16 * i); });
    const cdb = Buffer.alloc(32);
    cdb[0] = 0x42;
    cdb.writeUInt16BE(Math.max(0, list.length + (lieInCdb ? lie : 0)) & 0xffff, 7);
    return { cdb, dataOut: list };
  });

/** Anything: a known opcode followed by random bytes, or random bytes. */
const anyCdb = fc.tuple(fc.oneof(fc.constantFrom(...KNOWN_OPCODES), fc.integer({ min: 0, max: 255 })), bytes(31))
  .map(([op, rest]) => { const cdb = Buffer.alloc(32); cdb[0] = op; rest.copy(cdb, 1); return cdb; });

const command = fc.record({
  lun: fc.oneof({ weight: 6, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 3 }) }),
  body: fc.oneof(
    blockCdb.chain((cdb) => fc.record({ cdb: fc.constant(cdb), dataOut: fc.oneof(fc.constant(Buffer.alloc(0)), bytes(4096), fc.constant(Buffer.alloc(8192, 0x5a))) })),
    modeSelect,
    unmap,
    anyCdb.chain((cdb) => fc.record({ cdb: fc.constant(cdb), dataOut: bytes(512) })),
  ),
  capacity: fc.oneof(fc.constantFrom(0, 1, 4, 8, 36, 512, 4096), fc.integer({ min: 0, max: 1 << 16 })),
});

/** The per-result properties every command must satisfy. */
function checkResult(r: ScsiResult, capacity: number, dataOutLength: number): void {
  expect(SAM_STATUSES.has(r.status)).toBe(true);
  if (r.status === Status.CHECK_CONDITION) {
    expect(r.sense).toBeDefined();
    const sense = decodeFixedSense(r.sense!);
    expect(sense).toBeDefined();
    expect(sense!.responseCode).toBe(0x70);
    expect(r.sense!.length).toBeLessThanOrEqual(96);
    expect(r.sense![7]).toBe(r.sense!.length - 8); // ADDITIONAL SENSE LENGTH (SPC-4 §4.5.3)
  }
  expect(r.dataIn?.length ?? 0).toBeLessThanOrEqual(capacity);
  expect(r.dataOutConsumed ?? 0).toBeLessThanOrEqual(dataOutLength);
}

describe('SCSI command handlers (fuzzed)', () => {
  it('command sequences on a target: never reject, valid status and sense, data-in within allocation, backend never out of range', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(command, { minLength: 1, maxLength: 25 }), fc.constantFrom(512, 4096), fc.boolean(), async (commands, blockSize, readOnly) => {
        const backend = new CheckedBackend(DISK_BYTES);
        const lu = new LogicalUnit({ ...testParams, logicalBlockSize: blockSize, physicalBlockSize: 4096, readOnly }, backend, { maxTransferBytes: 1 << 16 });
        const target = new ScsiTarget();
        target.attach(0, lu, { notify: false });
        let tag = 0n;
        for (const c of commands) {
          const r = await target.execute(c.lun, { cdb: c.body.cdb, dataOut: c.body.dataOut, dataInCapacity: c.capacity, tag: tag++ });
          checkResult(r, c.capacity, c.body.dataOut.length);
        }
        expect(backend.violations).toEqual([]);
      }),
      fuzzParams(300),
    );
  });

  it('resizing the disk between commands never lets a command reach outside the new size', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(command, fc.option(fc.integer({ min: 1, max: 4096 }), { freq: 4 })), { minLength: 1, maxLength: 15 }), async (steps) => {
        const backend = new CheckedBackend(DISK_BYTES);
        const lu = new LogicalUnit({ ...testParams }, backend, { maxTransferBytes: 1 << 16 });
        for (const [c, newBlocks] of steps) {
          if (newBlocks !== null) await lu.resize(newBlocks * 512);
          const r = await lu.execute({ cdb: c.body.cdb, dataOut: c.body.dataOut, dataInCapacity: c.capacity, tag: 0n });
          checkResult(r, c.capacity, c.body.dataOut.length);
        }
        expect(backend.violations).toEqual([]);
      }),
      fuzzParams(150),
    );
  });
});
