// Durability matrix (issue 9): WCE on/off × FUA on/off × SYNCHRONIZE CACHE,
// each ended by a SIGKILL of the engine, each checked twice:
//  1. data: the offline checker (test/crash/log.ts) finds every write the
//     contract calls durable intact, nothing else but old or new data;
//  2. syscalls: the engine runs under `strace -f -y`; every write the
//     contract calls durable-on-ack must reach the backing file through a
//     descriptor opened O_DSYNC (flags from /proc/PID/fdinfo) or with
//     RWF_DSYNC, and a SYNCHRONIZE CACHE must be followed by fdatasync/fsync
//     of the file. A process kill keeps the page cache, so (1) alone cannot
//     tell a missing fdatasync; (2) can. Guarantees: docs/durability.md.
import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { TestFrontend } from '../../hba/vhost-user/test-frontend.ts';
import { killEngine, O_DSYNC, openFlagsOf, startEngine } from '../crash/engine-process.ts';
import { CrashLog, checkFile, readLog, sha, writeContent } from '../crash/log.ts';
import { parseTrace } from '../crash/strace.ts';
import { cdb, clearUnitAttention, setWriteCache } from '../crash/workload.ts';

const HAVE_STRACE = spawnSync('strace', ['-V']).status === 0;
const SIZE = 4 << 20;
const SECTORS = 8;
const dir = mkdtempSync(join(tmpdir(), 'vhba-durability-'));
afterAll(() => rmSync(dir, { recursive: true, force: true, maxRetries: 5 }));

/** One row: how the LU is set, how the writes are sent, whether a flush follows. */
interface Row { name: string; wce: boolean; fua: boolean; flush: boolean; durableOnAck: boolean; region: number }
const ROWS: Row[] = [
  { name: 'WCE=1 FUA=0 + SYNCHRONIZE CACHE', wce: true, fua: false, flush: true, durableOnAck: false, region: 2 },
  { name: 'WCE=1 FUA=1', wce: true, fua: true, flush: false, durableOnAck: true, region: 1 },
  { name: 'WCE=1 FUA=0 no flush', wce: true, fua: false, flush: false, durableOnAck: false, region: 0 },
  { name: 'WCE=0 FUA=0', wce: false, fua: false, flush: false, durableOnAck: true, region: 3 },
  { name: 'WCE=0 FUA=1', wce: false, fua: true, flush: false, durableOnAck: true, region: 4 },
];
const WRITES_PER_ROW = 6;

describe.skipIf(!HAVE_STRACE)('durability matrix: WCE × FUA × flush, then SIGKILL', () => {
  it('every combination meets its guarantee, in the data and in the syscalls', async () => {
    const file = join(dir, 'disk.img');
    writeFileSync(file, '');
    truncateSync(file, SIZE);
    const trace = join(dir, 'engine.strace');
    const logPath = join(dir, 'matrix.log');
    const log = new CrashLog(logPath);
    const engine = await startEngine(join(dir, 'e.sock'), file, SIZE, trace);
    const offsets = new Map<number, Row>(); // byte offset of each write -> its row
    let seq = 1;
    try {
      const fe = TestFrontend.connect(join(dir, 'e.sock'));
      await fe.setup({ requestQueues: 1, queueSize: 128, memoryBytes: 16 << 20 });
      await clearUnitAttention(fe);
      // The flush row first: the unflushed row after it must stay not-durable in the log.
      for (const row of ROWS) {
        await setWriteCache(fe, row.wce);
        for (let i = 0; i < WRITES_PER_ROW; i++) {
          const lba = (row.region * 64 + i) * SECTORS;
          const data = writeContent(seq, lba, SECTORS);
          log.append({ t: 'W', seq, lba, sectors: SECTORS, durableOnAck: row.durableOnAck, sha: sha(data) });
          const r = await fe.command(0, 0, cdb.write16(lba, SECTORS, row.fua), { dataOut: data });
          expect(r.status, row.name).toBe(0);
          log.append({ t: 'A', seq });
          offsets.set(lba * 512, row);
          seq++;
        }
        if (row.flush) {
          const flushSeq = seq++;
          log.append({ t: 'S', seq: flushSeq });
          expect((await fe.command(0, 0, cdb.syncCache10())).status).toBe(0);
          log.append({ t: 'F', seq: flushSeq });
        }
      }
      const flags = openFlagsOf(engine.pid, file);
      await killEngine(engine);
      fe.close();
      log.close();

      // 1. Data after the kill.
      const check = checkFile(file, readLog(logPath));
      expect(check.garbage).toEqual([]);
      expect(check.lost).toEqual([]);
      expect(check.ackedMissing).toBe(0);
      expect(check.durableWrites).toBe(WRITES_PER_ROW * 4); // rows 2..5 promise durability

      // 2. Syscalls.
      const { writes, syncs } = parseTrace(readFileSync(trace, 'utf8'), file);
      const results: string[] = [];
      for (const row of ROWS) {
        const mine = writes.filter((w) => offsets.get(w.offset) === row);
        expect(mine.length, `${row.name}: traced writes`).toBeGreaterThanOrEqual(WRITES_PER_ROW);
        const dsync = mine.map((w) => w.rwfSync || ((flags.get(w.fd) ?? -1) >= 0 && ((flags.get(w.fd)! & O_DSYNC) !== 0)));
        expect(mine.every((w) => flags.has(w.fd) || w.rwfSync), `${row.name}: write through an fd the engine still holds`).toBe(true);
        // Durable-on-ack rows: all O_DSYNC. WCE=1 without FUA: cached (no O_DSYNC), so a missing flush would show.
        expect(dsync.every((d) => d === row.durableOnAck), `${row.name}: O_DSYNC on every write = ${row.durableOnAck}`).toBe(true);
        if (row.flush) {
          const lastWrite = Math.max(...mine.map((w) => w.line));
          expect(syncs.some((s) => s.line > lastWrite), `${row.name}: fdatasync after the writes`).toBe(true);
        }
        results.push(`${row.name}: ${mine.length} writes, O_DSYNC=${dsync.every(Boolean)}${row.flush ? `, fdatasync after=${syncs.some((s) => s.line > Math.max(...mine.map((w) => w.line)))}` : ''}`);
      }
      console.log(`durability matrix:\n  ${results.join('\n  ')}\n  checker: ${JSON.stringify({ ...check, lost: check.lost.length, garbage: check.garbage.length })}`);
    } finally {
      await killEngine(engine);
    }
  }, 300_000);
});
