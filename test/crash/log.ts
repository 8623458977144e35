// The crash-consistency log and its offline checker. A writer (the front-end
// side, which outlives the engine it drives) appends one record per event,
// each fdatasync'd before the next I/O is issued, so the log on disk is never
// behind what the front-end saw acknowledged. The checker reads the log and
// the backing file after the engine died and decides, per 512-byte sector,
// whether the file holds something the durability contract allows
// (docs/durability.md): SBC-3 §4.15 (FUA, SYNCHRONIZE CACHE), §6.4.5 (WCE).
import { closeSync, fdatasyncSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';
import { createHash } from 'node:crypto';

/** Logical block size the workloads use (the LUNs' LOGICAL BLOCK LENGTH). */
export const SECTOR = 512;

/** One log record (a JSON line). */
export type LogRecord =
  /** A write about to be submitted; `durableOnAck`: FUA set, or WCE off. */
  | { t: 'W'; seq: number; lba: number; sectors: number; durableOnAck: boolean; sha: string }
  /** That write completed with GOOD status. */
  | { t: 'A'; seq: number }
  /** SYNCHRONIZE CACHE submitted (`seq` orders it against writes). */
  | { t: 'S'; seq: number }
  /** That SYNCHRONIZE CACHE completed with GOOD status. */
  | { t: 'F'; seq: number }
  /** The engine was killed here (cycle boundary). */
  | { t: 'K'; cycle: number };

/** Deterministic content of sector `i` of write `seq` at `lba`: a header
 * naming it (so a mismatch report can say what was found) and a keyed fill. */
export function sectorContent(seq: number, lba: number, i: number): Buffer {
  const b = Buffer.alloc(SECTOR);
  b.write('VHBACRSH', 0, 'latin1');
  b.writeUInt32LE(seq, 8);
  b.writeUInt32LE(i, 12);
  b.writeBigUInt64LE(BigInt(lba + i), 16);
  let x = (seq * 0x9e3779b1 + (lba + i) * 0x85ebca6b) >>> 0 || 1;
  for (let o = 24; o < SECTOR; o += 4) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; // xorshift32
    b.writeUInt32LE(x, o);
  }
  return b;
}

/** The whole payload of write `seq`: `sectors` sectors from `lba`. */
export function writeContent(seq: number, lba: number, sectors: number): Buffer {
  return Buffer.concat(Array.from({ length: sectors }, (_, i) => sectorContent(seq, lba, i)));
}

/** SHA-256 of a payload, as recorded in 'W' records. */
export function sha(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Appends records to a log file, fdatasync after each (the host side's own
 * durability: the log must never claim less than the front-end saw). */
export class CrashLog {
  readonly path: string;
  readonly #fd: number;
  constructor(path: string) {
    this.path = path;
    this.#fd = openSync(path, 'a');
  }
  /** Appends one record and makes it durable. */
  append(r: LogRecord): void {
    writeSync(this.#fd, JSON.stringify(r) + '\n');
    fdatasyncSync(this.#fd);
  }
  /** Closes the log. */
  close(): void {
    closeSync(this.#fd);
  }
}

/** Reads a log file back. */
export function readLog(path: string): LogRecord[] {
  return readFileSync(path, 'utf8').split('\n').filter((l) => l.length > 0).map((l) => JSON.parse(l) as LogRecord);
}

/** What the checker found. */
export interface CheckResult {
  /** Sectors written at least once. */
  sectorsChecked: number;
  /** Writes whose durability the contract promised (FUA/WCE-off acked, or acked before a completed flush). */
  durableWrites: number;
  /** Sectors that hold something older than their newest durable write, or garbage: lost flushed data. */
  lost: string[];
  /** Sectors holding neither the original, nor a version that was ever submitted: corruption. */
  garbage: string[];
  /** Acked but not durable writes no longer present (allowed by the contract; a process kill keeps the page cache, so expected 0 there). */
  ackedMissing: number;
}

interface Version { seq: number; acked: boolean; durable: boolean }

/** Checks `file` (read with the engine dead) against `records`. The original
 * content of every sector is zeros (a fresh sparse file). Per sector: let D be
 * the newest durable version; the sector must equal D or a version submitted
 * after D (old or new, never anything else); with no durable version it may
 * also still be zeros. `content` regenerates versions (default sectorContent). */
/** Content of sector `i` of write `seq` at `lba` (the checker regenerates every version). */
export type SectorContent = (seq: number, lba: number, i: number) => Buffer;

export function checkFile(file: string, records: readonly LogRecord[], content: SectorContent = sectorContent): CheckResult {
  const writes = new Map<number, { lba: number; sectors: number; durableOnAck: boolean; acked: boolean; durable: boolean }>();
  const acked: number[] = []; // seqs acked, in order
  const flushStart = new Map<number, number>(); // flush seq -> number of acks seen when it was submitted
  for (const r of records) {
    if (r.t === 'W') writes.set(r.seq, { lba: r.lba, sectors: r.sectors, durableOnAck: r.durableOnAck, acked: false, durable: false });
    else if (r.t === 'A') {
      const w = writes.get(r.seq);
      if (!w) throw new Error(`log: ack of unknown write ${r.seq}`);
      w.acked = true;
      if (w.durableOnAck) w.durable = true;
      acked.push(r.seq);
    } else if (r.t === 'S') flushStart.set(r.seq, acked.length);
    else if (r.t === 'F') {
      const n = flushStart.get(r.seq);
      if (n === undefined) throw new Error(`log: completion of unknown flush ${r.seq}`);
      for (const s of acked.slice(0, n)) writes.get(s)!.durable = true; // SBC-3 §5.22: everything completed before it
    }
  }
  const perSector = new Map<number, Version[]>();
  for (const [seq, w] of writes) {
    for (let i = 0; i < w.sectors; i++) {
      const list = perSector.get(w.lba + i) ?? [];
      list.push({ seq, acked: w.acked, durable: w.durable });
      perSector.set(w.lba + i, list);
    }
  }
  const fd = openSync(file, 'r');
  const result: CheckResult = { sectorsChecked: 0, durableWrites: [...writes.values()].filter((w) => w.durable).length, lost: [], garbage: [], ackedMissing: 0 };
  try {
    const buf = Buffer.alloc(SECTOR);
    const zero = Buffer.alloc(SECTOR);
    for (const [lba, versions] of perSector) {
      versions.sort((a, b) => a.seq - b.seq);
      result.sectorsChecked++;
      buf.fill(0);
      readSync(fd, buf, 0, SECTOR, lba * SECTOR);
      let found: number | null = null; // seq found, -1 for zeros
      if (buf.equals(zero)) found = -1;
      else {
        for (const v of versions) {
          const w = writes.get(v.seq)!;
          if (buf.equals(content(v.seq, w.lba, lba - w.lba))) { found = v.seq; break; }
        }
      }
      const newestDurable = versions.filter((v) => v.durable).at(-1)?.seq ?? -1;
      const newestAcked = versions.filter((v) => v.acked).at(-1)?.seq ?? -1;
      if (found === null) result.garbage.push(`sector ${lba}: matches no version (${describe(buf)})`);
      else if (found < newestDurable) result.lost.push(`sector ${lba}: holds ${found === -1 ? 'zeros' : `write ${found}`}, durable write ${newestDurable} lost`);
      if (found !== null && found < newestAcked) result.ackedMissing++;
    }
  } finally {
    closeSync(fd);
  }
  return result;
}

function describe(b: Buffer): string {
  return b.subarray(0, 8).toString('latin1') === 'VHBACRSH' ? `header of write ${b.readUInt32LE(8)} sector ${b.readUInt32LE(12)}` : `bytes ${b.subarray(0, 16).toString('hex')}`;
}

/** The guest workload's sector content (test/crash/guest-writer.sh): the
 * 32-byte line "VHBAGST <seq:11> <lba:11>\n" repeated, the same in every sector. */
export function guestSectorContent(seq: number, lba: number): Buffer {
  const line = `VHBAGST ${String(seq).padStart(11, '0')} ${String(lba).padStart(11, '0')}\n`;
  return Buffer.from(line.repeat(SECTOR / line.length), 'latin1');
}

/** Turns the guest's console lines (CRW/CRA/CRS/CRF, see guest-writer.sh) into log records. */
export function recordsFromConsole(text: string, sectors: number): LogRecord[] {
  const out: LogRecord[] = [];
  for (const m of text.matchAll(/^CR([WASF]) (\d+)(?: (\d+) ([01]))?\r?$/gm)) {
    const seq = Number(m[2]);
    if (m[1] === 'W') out.push({ t: 'W', seq, lba: Number(m[3]), sectors, durableOnAck: m[4] === '1', sha: '' });
    else out.push({ t: m[1] as 'A' | 'S' | 'F', seq });
  }
  return out;
}
