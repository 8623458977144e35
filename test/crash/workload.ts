// The crash workload, driver side: random WRITE(16)s (FUA or not) and
// SYNCHRONIZE CACHE(10)s through a test vhost-user front-end, every step
// logged (test/crash/log.ts) before it is issued and after it completes, until
// the connection dies under it. Each write goes to a block no other in-flight
// write touches, so per-sector "old or new" is well defined.
import { TestFrontend } from '../../hba/vhost-user/test-frontend.ts';
import { CrashLog, SECTOR, sha, writeContent } from './log.ts';

/** CDB builders (SBC-3 §5.40 WRITE(16), §5.23 SYNCHRONIZE CACHE(10), §5.16 READ(16)). */
export const cdb = {
  write16(lba: number, sectors: number, fua: boolean): Buffer {
    const c = Buffer.alloc(16);
    c[0] = 0x8a;
    c[1] = fua ? 0x08 : 0;
    c.writeBigUInt64BE(BigInt(lba), 2);
    c.writeUInt32BE(sectors, 10);
    return c;
  },
  read16(lba: number, sectors: number): Buffer {
    const c = Buffer.alloc(16);
    c[0] = 0x88;
    c.writeBigUInt64BE(BigInt(lba), 2);
    c.writeUInt32BE(sectors, 10);
    return c;
  },
  syncCache10(): Buffer {
    return Buffer.from([0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
  },
};

/** Sets the caching page's WCE bit (SBC-3 §6.4.5) with MODE SENSE(10) then
 * MODE SELECT(10) of the page it returned. */
export async function setWriteCache(fe: TestFrontend, enabled: boolean): Promise<void> {
  const sense = await fe.command(0, 0, [0x5a, 0x08, 0x08, 0, 0, 0, 0, 0, 255, 0], { dataInLength: 255 });
  if (sense.status !== 0) throw new Error(`MODE SENSE(10): status ${sense.status}`);
  const pageLen = sense.dataIn[9]! + 2;
  const page = Buffer.from(sense.dataIn.subarray(8, 8 + pageLen));
  page[0] = page[0]! & 0x3f;
  page[2] = enabled ? page[2]! | 0x04 : page[2]! & ~0x04;
  const list = Buffer.concat([Buffer.alloc(8), page]);
  const c = [0x55, 0x10, 0, 0, 0, 0, 0, 0, list.length, 0];
  const sel = await fe.command(0, 0, c, { dataOut: list });
  if (sel.status !== 0) throw new Error(`MODE SELECT(10): status ${sel.status}, sense ${sel.sense.toString('hex')}`);
}

/** Workload shape. */
export interface WorkloadOptions {
  /** Blocks (of `blockSectors` sectors) the writes go to. */
  blocks: number;
  blockSectors: number;
  /** Concurrent commands. */
  depth: number;
  /** Share of writes with FUA, 0..1. */
  fuaShare: number;
  /** Share of operations that are SYNCHRONIZE CACHE, 0..1. */
  syncShare: number;
  /** WCE as the LU has it (WCE off: every acked write is durable). */
  writeCacheEnabled: boolean;
  /** Stop after this many operations (the kill usually comes first). */
  maxOps: number;
  /** Next sequence number (continues across cycles). */
  seq: { next: number };
  random: () => number;
  /** Called after each acknowledged write (the test times its kill from the first). */
  onAck?: () => void;
}

/** Counts of what was acknowledged. */
export interface WorkloadStats { writes: number; fuaAcked: number; acked: number; flushesCompleted: number; endedBy: string }

/** Runs until `maxOps` or until the connection dies (the engine was killed). */
export async function runWorkload(fe: TestFrontend, log: CrashLog, o: WorkloadOptions): Promise<WorkloadStats> {
  const stats: WorkloadStats = { writes: 0, fuaAcked: 0, acked: 0, flushesCompleted: 0, endedBy: 'maxOps' };
  const busy = new Set<number>();
  let ops = 0;
  let tag = 1n;
  let stop = false;
  const worker = async (): Promise<void> => {
    while (!stop && ops < o.maxOps) {
      ops++;
      const seq = o.seq.next++;
      if (o.random() < o.syncShare) {
        log.append({ t: 'S', seq });
        const r = await fe.command(0, 0, cdb.syncCache10(), { tag: tag++ });
        if (r.status !== 0) throw new Error(`SYNCHRONIZE CACHE: status ${r.status}`);
        log.append({ t: 'F', seq });
        stats.flushesCompleted++;
        continue;
      }
      let block = Math.floor(o.random() * o.blocks);
      for (let i = 0; busy.has(block) && i < o.blocks; i++) block = (block + 1) % o.blocks;
      if (busy.has(block)) continue;
      busy.add(block);
      try {
        const lba = block * o.blockSectors;
        const fua = o.random() < o.fuaShare;
        const data = writeContent(seq, lba, o.blockSectors);
        log.append({ t: 'W', seq, lba, sectors: o.blockSectors, durableOnAck: fua || !o.writeCacheEnabled, sha: sha(data) });
        stats.writes++;
        const r = await fe.command(0, 0, cdb.write16(lba, o.blockSectors, fua), { dataOut: data, tag: tag++ });
        if (r.status !== 0) throw new Error(`WRITE(16): status ${r.status}, sense ${r.sense.toString('hex')}`);
        log.append({ t: 'A', seq });
        stats.acked++;
        o.onAck?.();
        if (fua) stats.fuaAcked++;
      } finally {
        busy.delete(block);
      }
    }
  };
  const results = await Promise.allSettled(Array.from({ length: o.depth }, () => worker().catch((e: unknown) => { stop = true; throw e; })));
  const failure = results.find((r) => r.status === 'rejected');
  if (failure) {
    const msg = String((failure as PromiseRejectedResult).reason);
    if (!fe.isClosed && !/connection closed/.test(msg)) throw (failure as PromiseRejectedResult).reason;
    stats.endedBy = 'connection closed';
  }
  return stats;
}

/** Reads `sectors` at `lba` through the engine (the "guest" view after restart). */
export async function readBack(fe: TestFrontend, lba: number, sectors: number): Promise<Buffer> {
  const r = await fe.command(0, 0, cdb.read16(lba, sectors), { dataInLength: sectors * SECTOR });
  if (r.status !== 0) throw new Error(`READ(16): status ${r.status}`);
  return r.dataIn;
}

/** TEST UNIT READY until GOOD: consumes the POWER ON unit attention a fresh
 * engine reports first (SPC-4 §5.14). */
export async function clearUnitAttention(fe: TestFrontend): Promise<void> {
  for (let i = 0; i < 4; i++) {
    const r = await fe.command(0, 0, [0, 0, 0, 0, 0, 0]);
    if (r.status === 0) return;
  }
  throw new Error('TEST UNIT READY never returned GOOD');
}
