// Helpers for the SCSI unit tests: a LogicalUnit over a MemoryBackend, CDB
// builders and result decoders. Real code, shared by every *.test.ts here.
import { MemoryBackend } from '../backends/memory.ts';
import { LogicalUnit, type LogicalUnitOptions } from './logical-unit.ts';
import { decodeFixedSense, type DecodedSense, type SenseCode } from './sense.ts';
import { Status, type LogicalUnitParams, type ScsiResult } from './types.ts';

/** Parameters of a typical 512e test disk. */
export const testParams: LogicalUnitParams = {
  logicalBlockSize: 512,
  physicalBlockSize: 4096,
  serial: 'SERIAL0001',
  wwn: '5000c50012345678',
  readOnly: false,
};

/** A fresh LU over a MemoryBackend; its POWER ON unit attention is already
 * consumed unless `keepPowerOnUa`. */
export async function makeUnit(
  opts: { params?: Partial<LogicalUnitParams>; sizeBytes?: number; options?: LogicalUnitOptions; keepPowerOnUa?: boolean } = {},
): Promise<{ lu: LogicalUnit; backend: MemoryBackend }> {
  const backend = new MemoryBackend(opts.sizeBytes ?? 1 << 20);
  const lu = new LogicalUnit({ ...testParams, ...opts.params }, backend, opts.options);
  if (!opts.keepPowerOnUa) await run(lu, [0x00, 0, 0, 0, 0, 0]);
  return { lu, backend };
}

/** Runs a CDB (zero-padded to 16 bytes unless given as a Buffer) on an LU. */
export function run(
  lu: { execute: LogicalUnit['execute'] },
  cdb: number[] | Buffer,
  opts: { dataOut?: Buffer; dataInCapacity?: number } = {},
): Promise<ScsiResult> {
  const bytes = Buffer.isBuffer(cdb) ? cdb : padCdb(cdb);
  return lu.execute({ cdb: bytes, dataOut: opts.dataOut ?? Buffer.alloc(0), dataInCapacity: opts.dataInCapacity ?? 1 << 24, tag: 1n });
}

/** A CDB padded with zeros to its group length (as a transport's fixed CDB area would be). */
export function padCdb(bytes: number[]): Buffer {
  const out = Buffer.alloc(Math.max(bytes.length, 16));
  Buffer.from(bytes).copy(out);
  return out;
}

/** Builds a 16-byte READ/WRITE-style CDB: opcode, flags, 64-bit LBA, 32-bit length. */
export function cdb16(opcode: number, lba: bigint, length: number, flags = 0): Buffer {
  const cdb = Buffer.alloc(16);
  cdb[0] = opcode;
  cdb[1] = flags;
  cdb.writeBigUInt64BE(lba, 2);
  cdb.writeUInt32BE(length, 10);
  return cdb;
}

/** Builds a 10-byte READ/WRITE-style CDB: opcode, flags, 32-bit LBA, 16-bit length. */
export function cdb10(opcode: number, lba: number, length: number, flags = 0): Buffer {
  const cdb = Buffer.alloc(10);
  cdb[0] = opcode;
  cdb[1] = flags;
  cdb.writeUInt32BE(lba, 2);
  cdb.writeUInt16BE(length, 7);
  return cdb;
}

/** The decoded sense of a CHECK CONDITION; throws if the result is not one. */
export function senseOf(result: ScsiResult): DecodedSense {
  if (result.status !== Status.CHECK_CONDITION || !result.sense) {
    throw new Error(`expected CHECK CONDITION, got status ${result.status}`);
  }
  const sense = decodeFixedSense(result.sense);
  if (!sense) throw new Error('undecodable sense');
  return sense;
}

/** key/asc/ascq of a CHECK CONDITION, for toEqual against a SenseCode. */
export function codeOf(result: ScsiResult): { key: number; asc: number; ascq: number } {
  const { key, asc, ascq } = senseOf(result);
  return { key, asc, ascq };
}

/** key/asc/ascq of a SenseCode constant. */
export function expected(code: SenseCode): { key: number; asc: number; ascq: number } {
  return { key: code.key, asc: code.asc, ascq: code.ascq };
}

/** A buffer of `blocks` blocks where every byte of block i is (seed + i) & 0xff. */
export function pattern(blocks: number, blockSize: number, seed = 1): Buffer {
  const out = Buffer.alloc(blocks * blockSize);
  for (let i = 0; i < blocks; i++) out.fill((seed + i) & 0xff, i * blockSize, (i + 1) * blockSize);
  return out;
}
