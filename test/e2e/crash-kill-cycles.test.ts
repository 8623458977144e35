// Crash consistency, fast loop (issue 9, "Nothing flushed is lost"): the
// engine runs in its own process; a test front-end writes random blocks with
// and without FUA and interleaves SYNCHRONIZE CACHE, logging every step
// (fdatasync'd) on the host; the engine is SIGKILLed at a random moment; an
// offline checker (test/crash/log.ts) then reads the backing file: every write
// acknowledged with FUA, and every write acknowledged before a completed
// flush, reads back intact; other sectors hold old or new data, nothing else.
// The engine is restarted on the same file and the next cycle continues the
// same log, after reading a sample back through the restarted engine.
// A process kill keeps the page cache, so this proves ordering and
// acknowledgement (nothing is acked before its write reached the kernel) —
// the syscall-level half (FUA → O_DSYNC, flush → fdatasync) is proved by
// durability-matrix.test.ts. See docs/durability.md.
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { TestFrontend } from '../../hba/vhost-user/test-frontend.ts';
import { startEngine, killEngine, type EngineProcess } from '../crash/engine-process.ts';
import { CrashLog, checkFile, readLog, SECTOR, sectorContent } from '../crash/log.ts';
import { clearUnitAttention, readBack, runWorkload, type WorkloadStats } from '../crash/workload.ts';

const CYCLES = Number(process.env.VHBA_CRASH_CYCLES ?? 50);
const SIZE = 4 << 20;
const BLOCK_SECTORS = 8;
const BLOCKS = 256; // 1 MiB of the disk sees writes: plenty of overwrites

function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x / 2 ** 32; };
}

const dir = mkdtempSync(join(tmpdir(), 'vhba-crash-'));
afterAll(() => rmSync(dir, { recursive: true, force: true, maxRetries: 5 }));

describe('crash consistency: SIGKILL the engine mid-write, many times', () => {
  it(`survives ${CYCLES} kill cycles with 0 lost flushed/FUA writes`, async () => {
    const file = join(dir, 'disk.img');
    writeFileSync(file, '');
    truncateSync(file, SIZE);
    const logPath = join(dir, 'crash.log');
    const log = new CrashLog(logPath);
    const seed = Number(process.env.VHBA_CRASH_SEED ?? Date.now() % 1_000_000);
    const random = prng(seed);
    const seq = { next: 1 };
    const totals = { cycles: 0, acked: 0, fuaAcked: 0, flushes: 0, killedMidRun: 0, durable: 0 };
    let engine: EngineProcess | null = null;
    try {
      for (let cycle = 0; cycle < CYCLES; cycle++) {
        const socket = join(dir, `c${cycle}.sock`);
        engine = await startEngine(socket, file, SIZE);
        const fe = TestFrontend.connect(socket);
        await fe.setup({ requestQueues: 1, queueSize: 128, memoryBytes: 16 << 20 });
        await clearUnitAttention(fe);
        if (cycle > 0) {
          // The restarted engine serves what the file holds (a sample of written blocks).
          for (let i = 0; i < 4; i++) {
            const lba = Math.floor(random() * BLOCKS) * BLOCK_SECTORS;
            const via = await readBack(fe, lba, BLOCK_SECTORS);
            expect(via.equals(readFileSync(file).subarray(lba * SECTOR, (lba + BLOCK_SECTORS) * SECTOR))).toBe(true);
          }
        }
        const killAfterMs = 5 + Math.floor(random() * 150);
        // The kill comes a random 5–155 ms after the first acknowledged write, so every cycle kills mid-stream.
        let firstAck!: () => void;
        const acked = new Promise<void>((resolve) => (firstAck = resolve));
        const run = runWorkload(fe, log, { blocks: BLOCKS, blockSectors: BLOCK_SECTORS, depth: 4, fuaShare: 0.3, syncShare: 0.1, writeCacheEnabled: true, maxOps: 100_000, seq, random, onAck: () => firstAck() });
        const e = engine;
        const killer = Promise.race([acked, new Promise((r) => setTimeout(r, 10_000))])
          .then(() => new Promise((r) => setTimeout(r, killAfterMs)))
          .then(() => killEngine(e));
        const stats: WorkloadStats = await run;
        await killer;
        engine = null;
        log.append({ t: 'K', cycle });
        fe.close();
        const result = checkFile(file, readLog(logPath));
        expect(result.garbage, `cycle ${cycle} (seed ${seed})`).toEqual([]);
        expect(result.lost, `cycle ${cycle} (seed ${seed})`).toEqual([]);
        // A process kill keeps the page cache: even unflushed acked writes survive.
        expect(result.ackedMissing, `cycle ${cycle} (seed ${seed})`).toBe(0);
        totals.cycles++;
        totals.acked += stats.acked;
        totals.fuaAcked += stats.fuaAcked;
        totals.flushes += stats.flushesCompleted;
        totals.durable = result.durableWrites;
        if (stats.endedBy === 'connection closed') totals.killedMidRun++;
        if ((cycle + 1) % 10 === 0) console.log(`crash kill cycles: ${cycle + 1} done, ${JSON.stringify(totals)}`);
      }
    } finally {
      log.close();
      if (engine) await killEngine(engine);
    }
    console.log(`crash kill cycles: ${JSON.stringify({ seed, ...totals })}`);
    expect(totals.cycles).toBe(CYCLES);
    expect(totals.killedMidRun).toBe(CYCLES); // every kill landed while I/O was in flight
    expect(totals.fuaAcked).toBeGreaterThan(CYCLES / 2);
    expect(totals.flushes).toBeGreaterThan(CYCLES / 5);
  }, CYCLES * 15_000 + 60_000);

  it('the checker catches a lost flushed write and garbage', () => {
    const file = join(dir, 'neg.img');
    writeFileSync(file, '');
    truncateSync(file, 64 * SECTOR);
    const logPath = join(dir, 'neg.log');
    const log = new CrashLog(logPath);
    log.append({ t: 'W', seq: 1, lba: 0, sectors: 1, durableOnAck: true, sha: '' });
    log.append({ t: 'A', seq: 1 });
    log.append({ t: 'W', seq: 2, lba: 8, sectors: 1, durableOnAck: false, sha: '' });
    log.append({ t: 'A', seq: 2 });
    log.append({ t: 'S', seq: 3 });
    log.append({ t: 'F', seq: 3 });
    log.append({ t: 'W', seq: 4, lba: 16, sectors: 1, durableOnAck: false, sha: '' }); // never acked
    log.close();
    // Nothing written: both durable writes are lost; the unacked one may be old.
    let r = checkFile(file, readLog(logPath));
    expect(r.lost).toHaveLength(2);
    expect(r.garbage).toEqual([]);
    // Write them: clean.
    const fd = openSync(file, 'r+');
    writeSync(fd, sectorContent(1, 0, 0), 0, SECTOR, 0);
    writeSync(fd, sectorContent(2, 8, 0), 0, SECTOR, 8 * SECTOR);
    r = checkFile(file, readLog(logPath));
    expect(r.lost).toEqual([]);
    // A flipped byte is garbage.
    writeSync(fd, Buffer.from([0xff]), 0, 1, 8 * SECTOR + 100);
    closeSync(fd);
    r = checkFile(file, readLog(logPath));
    expect(r.garbage).toHaveLength(1);
  });
});
