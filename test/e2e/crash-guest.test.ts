// Crash consistency with a real guest (issue 9): a Linux guest (QEMU TCG,
// vhost-user-scsi-pci) writes 4 KiB blocks with sg_raw WRITE(16) — FUA on
// every third — and SYNCHRONIZE CACHE every fifth write
// (test/crash/guest-writer.sh), printing each step to the console as it is
// issued and acknowledged. The engine (a child process) is SIGKILLed at a
// random point; QEMU 7.2 does not reconnect vhost-user-scsi, so the guest is
// then powered off, and an offline checker (test/crash/log.ts) verifies the
// backing file against the console log: every FUA write and every write
// acknowledged before a completed flush reads back intact; other sectors hold
// old or new data, never anything else. Each cycle boots a new guest on the
// same file, the engine restarted. VHBA_GUEST_CRASH_CYCLES (default 2).
import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Guest } from '../guest/qemu.ts';
import { killEngine, startEngine, type EngineProcess } from '../crash/engine-process.ts';
import { checkFile, guestSectorContent, recordsFromConsole, type LogRecord } from '../crash/log.ts';

const CYCLES = Number(process.env.VHBA_GUEST_CRASH_CYCLES ?? 2);
const SIZE = 8 << 20;
const BLOCKS = 128;
const WRITER = readFileSync(new URL('../crash/guest-writer.sh', import.meta.url), 'utf8');
const dir = mkdtempSync(join(tmpdir(), 'vhba-crash-guest-'));
afterAll(() => rmSync(dir, { recursive: true, force: true, maxRetries: 5 }));

describe('crash consistency with a real guest: SIGKILL the engine under sg_raw FUA writes and SYNCHRONIZE CACHE', () => {
  it(`${CYCLES} kill cycles, 0 lost flushed/FUA writes`, async () => {
    const file = join(dir, 'disk.img');
    writeFileSync(file, '');
    truncateSync(file, SIZE);
    const records: LogRecord[] = [];
    const totals = { cycles: 0, acked: 0, fua: 0, flushes: 0 };
    for (let cycle = 0; cycle < CYCLES; cycle++) {
      const socket = join(dir, `c${cycle}`, 'hba0.sock');
      let engine: EngineProcess | null = await startEngine(socket, file, SIZE);
      let guest: Guest | undefined;
      try {
        guest = await Guest.boot({
          name: `crash-guest-${cycle}`,
          extraArgs: ['-chardev', `socket,id=c0,path=${socket}`, '-device', 'vhost-user-scsi-pci,chardev=c0,num_queues=1'],
          files: [{ path: '/crash-writer.sh', content: WRITER }],
        });
        const firstSeq = cycle * 1_000_000 + 1;
        const writer = guest.run(`/crash-writer.sh ${firstSeq} ${BLOCKS}`, { timeoutMs: 600_000 }).catch(() => undefined);
        // Let it get going, then kill at a random point.
        const want = 8 + Math.floor(Math.random() * 20);
        const deadline = Date.now() + 300_000;
        for (;;) {
          const seen = readFileSync(guest.consoleLogPath, 'utf8');
          if ((seen.match(/^CRA \d+/gm) ?? []).length >= want) break;
          if (/^CRX/m.test(seen)) throw new Error(`guest writer failed before the kill:\n${seen.slice(-2000)}`);
          if (Date.now() > deadline) throw new Error(`only ${(seen.match(/^CRA \d+/gm) ?? []).length} acks in 300 s`);
          await new Promise((r) => setTimeout(r, 200));
        }
        await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 300)));
        await killEngine(engine);
        engine = null;
        await new Promise((r) => setTimeout(r, 1000)); // let the console catch up
        const text = readFileSync(guest.consoleLogPath, 'utf8');
        void writer;
        const mine = recordsFromConsole(text, 8);
        expect(mine.some((r) => r.t === 'A'), 'the guest acknowledged writes before the kill').toBe(true);
        records.push(...mine, { t: 'K', cycle });
        totals.acked += mine.filter((r) => r.t === 'A').length;
        totals.fua += mine.filter((r) => r.t === 'W' && r.durableOnAck && mine.some((a) => a.t === 'A' && a.seq === r.seq)).length;
        totals.flushes += mine.filter((r) => r.t === 'F').length;
      } finally {
        await guest?.kill();
        if (engine) await killEngine(engine);
      }
      const result = checkFile(file, records, (seq, lba) => guestSectorContent(seq, lba));
      expect(result.garbage, `cycle ${cycle}`).toEqual([]);
      expect(result.lost, `cycle ${cycle}`).toEqual([]);
      expect(result.ackedMissing, `cycle ${cycle}`).toBe(0);
      totals.cycles++;
    }
    console.log(`guest crash cycles: ${JSON.stringify(totals)}`);
    expect(totals.fua).toBeGreaterThan(0);
    expect(totals.flushes).toBeGreaterThan(0);
  }, CYCLES * 400_000);
});
