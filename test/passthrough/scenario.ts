// The passthrough checks of issue 8, independent of how the device is reached:
// each compares what a guest sees through vhba (the engine's controller,
// driven by TestFrontend) with what the device answers directly (sg3-utils in
// the test guest, or a second libiscsi session on the host). Used by
// test/passthrough/in-guest.ts (SG_IO) and test/e2e/passthrough-iscsi.test.ts.
// Every function returns plain data (hex strings, numbers): the callers print
// it as JSON or assert on it.
import { createHash, randomBytes } from 'node:crypto';
import type { TestFrontend } from '../../hba/vhost-user/test-frontend.ts';
import { CMD_REQ_SIZE, CMD_RESP_SIZE, encodeLun, Response } from '../../hba/virtio-scsi/framing.ts';
import { FIRST_REQUEST_QUEUE } from '../../hba/virtio-scsi/config.ts';

/** SAM-5 status bytes the checks look at. */
export const GOOD = 0x00;
export const CHECK_CONDITION = 0x02;
export const RESERVATION_CONFLICT = 0x18;
const UNIT_ATTENTION = 0x6;

/** One command's result on either path. */
export interface Outcome {
  /** virtio-scsi response code (0 = OK); the direct path reports 0 unless the command did not complete. */
  response: number;
  status: number;
  sense: Buffer;
  data: Buffer;
  /** Set when the command did not finish at all (timeout of the test's own wait, tool crash). */
  error?: string;
}

/** The device reached without vhba. */
export interface DirectPath {
  readonly name: string;
  execute(cdb: Buffer, options?: { dataOut?: Buffer; dataInLength?: number }): Promise<Outcome>;
}

/** Sense key / ASC / ASCQ of fixed or descriptor sense (SPC-4 §4.5), or undefined. */
export function senseCode(sense: Buffer): { key: number; asc: number; ascq: number } | undefined {
  if (sense.length < 2) return undefined;
  const code = sense[0]! & 0x7f;
  if ((code === 0x70 || code === 0x71) && sense.length >= 14) return { key: sense[2]! & 0x0f, asc: sense[12]!, ascq: sense[13]! };
  if ((code === 0x72 || code === 0x73) && sense.length >= 4) return { key: sense[1]! & 0x0f, asc: sense[2]!, ascq: sense[3]! };
  return undefined;
}

/** A LUN behind the engine's controller, reached through TestFrontend. */
export class VhbaPath {
  readonly #frontend: TestFrontend;
  readonly #target: number;
  readonly #lun: number;
  #tag = 1n;

  constructor(frontend: TestFrontend, target: number, lun: number) {
    this.#frontend = frontend;
    this.#target = target;
    this.#lun = lun;
  }

  /** One command; `error` set if no completion arrived within `timeoutMs`. */
  async once(cdb: Buffer, options: { dataOut?: Buffer; dataInLength?: number; timeoutMs?: number } = {}): Promise<Outcome> {
    const req = Buffer.alloc(CMD_REQ_SIZE);
    encodeLun(this.#target, this.#lun).copy(req, 0);
    req.writeBigUInt64LE(this.#tag++, 8);
    cdb.copy(req, 19);
    const dataInLength = options.dataInLength ?? 0;
    try {
      const { written } = await this.#frontend.submit(FIRST_REQUEST_QUEUE, Buffer.concat([req, options.dataOut ?? Buffer.alloc(0)]), CMD_RESP_SIZE + dataInLength, options.timeoutMs ?? 20_000);
      const senseLength = Math.min(written.readUInt32LE(0), 96);
      const resid = written.readUInt32LE(4);
      const data = Buffer.from(written.subarray(CMD_RESP_SIZE, CMD_RESP_SIZE + Math.max(0, dataInLength - resid)));
      return { response: written[11]!, status: written[10]!, sense: Buffer.from(written.subarray(12, 12 + senseLength)), data };
    } catch (error) {
      return { response: -1, status: -1, sense: Buffer.alloc(0), data: Buffer.alloc(0), error: (error as Error).message };
    }
  }

  /** Like once(), retried (up to 3 times) past UNIT ATTENTION (SAM-5 §5.14). */
  async execute(cdb: Buffer, options: { dataOut?: Buffer; dataInLength?: number; timeoutMs?: number } = {}): Promise<Outcome> {
    let result = await this.once(cdb, options);
    for (let i = 0; i < 3 && isUnitAttention(result); i++) result = await this.once(cdb, options);
    return result;
  }
}

/** Whether an outcome is CHECK CONDITION / UNIT ATTENTION. */
export function isUnitAttention(o: Outcome): boolean {
  return o.response === Response.OK && o.status === CHECK_CONDITION && senseCode(o.sense)?.key === UNIT_ATTENTION;
}

/** A short summary of an outcome for reports. */
export function describeOutcome(o: Outcome): { response: number; status: number; sense: string; dataLength: number; error?: string } {
  return { response: o.response, status: o.status, sense: o.sense.toString('hex'), dataLength: o.data.length, ...(o.error ? { error: o.error } : {}) };
}

/** CDBs of the identity pages compared byte for byte (SPC-4 §6.6, §7.8; SBC-3 §5.16). */
export const IDENTITY_CDBS = {
  inquiry: Buffer.from([0x12, 0, 0, 0, 0xff, 0]),
  vpd80: Buffer.from([0x12, 1, 0x80, 0, 0xff, 0]),
  vpd83: Buffer.from([0x12, 1, 0x83, 0, 0xff, 0]),
  readCapacity16: Buffer.from([0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0]),
} as const;

/** One identity page through vhba and directly. */
export interface PageComparison {
  vhba: string;
  direct: string;
  vhbaStatus: number;
  directStatus: number;
}

/** Reads every IDENTITY_CDBS page both ways (hex data). */
export async function compareIdentity(vhba: VhbaPath, direct: DirectPath): Promise<Record<keyof typeof IDENTITY_CDBS, PageComparison>> {
  const out = {} as Record<keyof typeof IDENTITY_CDBS, PageComparison>;
  for (const [name, cdb] of Object.entries(IDENTITY_CDBS) as [keyof typeof IDENTITY_CDBS, Buffer][]) {
    const allocation = cdb[0] === 0x9e ? 32 : 255;
    const v = await vhba.execute(cdb, { dataInLength: allocation });
    const d = await direct.execute(cdb, { dataInLength: allocation });
    out[name] = { vhba: v.data.toString('hex'), direct: d.data.toString('hex'), vhbaStatus: v.status, directStatus: d.status };
  }
  return out;
}

/** READ(10)/WRITE(10) CDB (SBC-3 §5.11, §5.32). */
export function rw10(opcode: 0x28 | 0x2a, lba: number, blocks: number): Buffer {
  const cdb = Buffer.alloc(10);
  cdb[0] = opcode;
  cdb.writeUInt32BE(lba, 2);
  cdb.writeUInt16BE(blocks, 7);
  return cdb;
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Checksums of a write/read round trip in both directions. */
export interface RoundTrip {
  blockSize: number;
  written: string;
  /** Written through vhba, read back through vhba. */
  vhbaThenVhba: string;
  /** Written through vhba, read directly (the other initiator, if any). */
  vhbaThenDirect: string;
  /** Written directly, read through vhba. */
  directThenVhba: string;
  directWritten: string;
  statuses: number[];
}

/** Writes `blocks` random blocks at `lba` through vhba and reads them back
 * both ways, then the reverse direction at `lba + blocks`. */
export async function roundTrip(vhba: VhbaPath, direct: DirectPath, blockSize: number, lba: number, blocks: number): Promise<RoundTrip> {
  const bytes = blockSize * blocks;
  const a = randomBytes(bytes);
  const b = randomBytes(bytes);
  const w1 = await vhba.execute(rw10(0x2a, lba, blocks), { dataOut: a });
  const r1 = await vhba.execute(rw10(0x28, lba, blocks), { dataInLength: bytes });
  const r2 = await direct.execute(rw10(0x28, lba, blocks), { dataInLength: bytes });
  const w2 = await direct.execute(rw10(0x2a, lba + blocks, blocks), { dataOut: b });
  const r3 = await vhba.execute(rw10(0x28, lba + blocks, blocks), { dataInLength: bytes });
  return {
    blockSize,
    written: sha256(a),
    vhbaThenVhba: sha256(r1.data),
    vhbaThenDirect: sha256(r2.data),
    directWritten: sha256(b),
    directThenVhba: sha256(r3.data),
    statuses: [w1, r1, r2, w2, r3].map((o) => (o.response === Response.OK ? o.status : 0x100 + o.response)),
  };
}

/** PERSISTENT RESERVE OUT (SPC-4 §6.16): service action, type, 24-byte
 * parameter list with reservation key and service action reservation key. */
export function prOut(serviceAction: number, type: number, key: bigint, saKey: bigint): { cdb: Buffer; data: Buffer } {
  const cdb = Buffer.from([0x5f, serviceAction & 0x1f, type & 0x0f, 0, 0, 0, 0, 0, 24, 0]);
  const data = Buffer.alloc(24);
  data.writeBigUInt64BE(key, 0);
  data.writeBigUInt64BE(saKey, 8);
  return { cdb, data };
}

/** PERSISTENT RESERVE IN READ RESERVATION (SPC-4 §6.15.4): key and type, or none. */
export function decodeReadReservation(data: Buffer): { generation: number; key?: string; type?: number } {
  if (data.length < 8) return { generation: -1 };
  const generation = data.readUInt32BE(0);
  if (data.readUInt32BE(4) < 16 || data.length < 24) return { generation };
  return { generation, key: data.readBigUInt64BE(8).toString(16), type: data[21]! & 0x0f };
}

/** What the PERSISTENT RESERVE check saw. */
export interface ReservationCheck {
  register: number;
  reserve: number;
  /** READ RESERVATION from the other initiator. */
  seenByOther: { generation: number; key?: string; type?: number };
  /** A WRITE(10) from the other initiator: status (expect RESERVATION CONFLICT). */
  otherWriteStatus: number;
  /** The holder's own WRITE(10) through vhba. */
  holderWriteStatus: number;
  /** READ RESERVATION from the other initiator after the holder's CLEAR. */
  afterClear: { generation: number; key?: string; type?: number };
  clear: number;
  /** Every step's outcome, for diagnosis. */
  steps: Record<string, ReturnType<typeof describeOutcome>>;
}

/** WRITE EXCLUSIVE (type 1) reservation taken through vhba; `other` is a
 * second initiator of the same LUN. Clears everything afterwards. */
export async function persistentReserve(vhba: VhbaPath, other: DirectPath, blockSize: number, key: bigint): Promise<ReservationCheck> {
  const status = (o: Outcome): number => (o.response === Response.OK ? o.status : 0x100 + o.response);
  const register = prOut(0x00, 0, 0n, key);
  const r1 = await vhba.execute(register.cdb, { dataOut: register.data });
  const reserve = prOut(0x01, 1, key, 0n);
  const r2 = await vhba.execute(reserve.cdb, { dataOut: reserve.data });
  const readReservation = Buffer.from([0x5e, 0x01, 0, 0, 0, 0, 0, 0, 64, 0]);
  const seen = await other.execute(readReservation, { dataInLength: 64 });
  const otherWrite = await other.execute(rw10(0x2a, 0, 1), { dataOut: Buffer.alloc(blockSize, 0xee) });
  const holderWrite = await vhba.execute(rw10(0x2a, 0, 1), { dataOut: Buffer.alloc(blockSize, 0x11) });
  const clear = prOut(0x03, 0, key, 0n);
  const r3 = await vhba.execute(clear.cdb, { dataOut: clear.data });
  const after = await other.execute(readReservation, { dataInLength: 64 });
  return {
    register: status(r1),
    reserve: status(r2),
    seenByOther: decodeReadReservation(seen.data),
    otherWriteStatus: status(otherWrite),
    holderWriteStatus: status(holderWrite),
    afterClear: decodeReadReservation(after.data),
    clear: status(r3),
    steps: Object.fromEntries(Object.entries({ register: r1, reserve: r2, seen, otherWrite, holderWrite, clear: r3, after }).map(([k, o]) => [k, describeOutcome(o)])),
  };
}

/** WRITE BUFFER mode 05h (download microcode, save, activate; SPC-4 §6.49),
 * `length` bytes of buffer 0: one of the opcodes the default policy refuses. */
export function writeBufferMicrocode(length: number): { cdb: Buffer; data: Buffer } {
  const cdb = Buffer.from([0x3b, 0x05, 0, 0, 0, 0, (length >> 16) & 0xff, (length >> 8) & 0xff, length & 0xff, 0]);
  return { cdb, data: Buffer.alloc(length, 0x5a) };
}

/** The refused-opcode check's raw observations. */
export interface RefusedCheck {
  vhba: { response: number; status: number; sense: string };
  /** A direct TEST UNIT READY after the refused command: what the device reports. */
  directAfterRefused: { status: number; sense: string };
  /** Control: the same WRITE BUFFER sent directly, then TEST UNIT READY. */
  control: { writeBuffer: { status: number; sense: string }; testUnitReady: { status: number; sense: string } };
}

/** Sends WRITE BUFFER through vhba (expect CHECK CONDITION ILLEGAL REQUEST
 * 20h/00h) and looks for its effect at the device: scsi_debug answers a
 * microcode download (mode 05h) with a unit attention, MICROCODE HAS BEEN
 * CHANGED WITHOUT RESET (3Fh/16h), which the next command reports. The control repeats the
 * download directly, proving the effect would be seen. */
export async function refusedOpcode(vhba: VhbaPath, direct: DirectPath): Promise<RefusedCheck> {
  const wb = writeBufferMicrocode(512);
  const tur = Buffer.alloc(6);
  const v = await vhba.once(wb.cdb, { dataOut: wb.data });
  const after = await direct.execute(tur);
  const controlWb = await direct.execute(wb.cdb, { dataOut: wb.data });
  const controlTur = await direct.execute(tur);
  const brief = (o: Outcome) => ({ status: o.status, sense: o.sense.toString('hex') });
  return {
    vhba: { response: v.response, ...brief(v) },
    directAfterRefused: brief(after),
    control: { writeBuffer: brief(controlWb), testUnitReady: brief(controlTur) },
  };
}

/** What one reader loop saw around a device's removal. */
export interface ReaderTrace {
  okBefore: number;
  okAfter: number;
  /** The first non-OK completion (response != OK or status != GOOD) after removal began. */
  firstFailure?: { msAfterRemoval: number; response: number; status: number; sense: string; error?: string };
  /** Commands that never completed within the wait (a hang). */
  hung: number;
}

/** The removal check's observations. */
export interface RemovalCheck {
  readers: ReaderTrace[];
  removalMs: number;
  /** A command sent after every reader stopped. */
  later: { response: number; status: number; sense: string; ms: number; error?: string };
  /** The other LUNs on the same controller, after the removal: READ(10) status (0 = GOOD). */
  others: Record<string, { response: number; status: number; error?: string }>;
}

/**
 * Runs `readers` loops of READ(10) on `vhba`; after `warmupMs` calls
 * `remove()` (which makes the device disappear), keeps reading until each loop
 * has seen a failed command (or `deadlineMs` passed), then checks a later
 * command and the `others` LUNs.
 */
export async function removalUnderLoad(options: {
  vhba: VhbaPath;
  blockSize: number;
  readers: number;
  warmupMs: number;
  deadlineMs: number;
  remove: () => Promise<void>;
  others: Record<string, { path: VhbaPath; blockSize: number }>;
}): Promise<RemovalCheck> {
  const { vhba, blockSize } = options;
  let removedAt = 0;
  let stop = false;
  const readers: ReaderTrace[] = [];
  const loops = Array.from({ length: options.readers }, async (_, i) => {
    const trace: ReaderTrace = { okBefore: 0, okAfter: 0, hung: 0 };
    readers.push(trace);
    for (let n = 0; !stop && n < 100_000; n++) {
      const o = await vhba.once(rw10(0x28, (i * 4) % 64, 4), { dataInLength: 4 * blockSize, timeoutMs: options.deadlineMs });
      if (o.error !== undefined) {
        trace.hung++;
        trace.firstFailure ??= { msAfterRemoval: removedAt ? Date.now() - removedAt : -1, response: o.response, status: o.status, sense: '', error: o.error };
        return;
      }
      const ok = o.response === Response.OK && o.status === GOOD;
      if (ok) {
        if (removedAt) trace.okAfter++;
        else trace.okBefore++;
        continue;
      }
      if (!removedAt) continue; // a failure before removal (e.g. a UA): keep going
      trace.firstFailure = { msAfterRemoval: Date.now() - removedAt, response: o.response, status: o.status, sense: o.sense.toString('hex') };
      return;
    }
  });
  await new Promise((r) => setTimeout(r, options.warmupMs));
  removedAt = Date.now();
  await options.remove();
  const removalMs = Date.now() - removedAt;
  const deadline = setTimeout(() => { stop = true; }, options.deadlineMs);
  await Promise.all(loops);
  clearTimeout(deadline);
  stop = true;
  const t = Date.now();
  const later = await vhba.once(rw10(0x28, 0, 1), { dataInLength: blockSize, timeoutMs: options.deadlineMs });
  const others: RemovalCheck['others'] = {};
  for (const [name, other] of Object.entries(options.others)) {
    const o = await other.path.execute(rw10(0x28, 0, 1), { dataInLength: other.blockSize });
    others[name] = { response: o.response, status: o.status, ...(o.error ? { error: o.error } : {}) };
  }
  return {
    readers,
    removalMs,
    later: { response: later.response, status: later.status, sense: later.sense.toString('hex'), ms: Date.now() - t, ...(later.error ? { error: later.error } : {}) },
    others,
  };
}
