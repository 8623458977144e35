// The bench's native vhost-user front-end (bench/frontend) against a real
// back-end, qemu-storage-daemon's vhost-user-blk export: data written in
// verify mode reads back intact over two exports (two connections), a byte
// corrupted behind the back-end's back is caught, notification variants
// (EVENT_IDX, indirect descriptors, polling) all complete cleanly, and
// `bench/run.ts --quick` produces its table, JSON and PNG; its passthrough
// section (one tgtd iSCSI LUN through vhba, qsd's iscsi driver and libiscsi
// directly) reports non-zero numbers and the vhba/qsd ratios (measured, not
// asserted: the numbers are performance, only their presence is checked).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, openSync, closeSync, readdirSync, readFileSync, readSync, rmSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBackingFiles } from '../../bench/lib/files.ts';
import { buildNative, runFrontend, type FrontendRun } from '../../bench/lib/native.ts';
import type { PassthroughReport } from '../../bench/lib/passthrough.ts';
import { qsd, type RunningSystem } from '../../bench/lib/systems.ts';
import { tgtdAvailable } from '../passthrough/tgtd.ts';

const FILE_SIZE = 8 << 20;
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
let dir: string;
let files: string[];
let daemon: RunningSystem;

function flipByte(path: string, offset: number): void {
  const fd = openSync(path, 'r+');
  try {
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, offset);
    b[0] = b[0]! ^ 0x5a;
    writeSync(fd, b, 0, 1, offset);
  } finally {
    closeSync(fd);
  }
}

function frontend(args: string[]): Promise<FrontendRun> {
  return runFrontend([...daemon.frontendArgs(2), '--quiet', ...args], 60_000);
}

describe('bench front-end against qemu-storage-daemon (vhost-user-blk)', () => {
  beforeAll(async () => {
    buildNative();
    dir = mkdtempSync('/dev/shm/vhba-bench-test-');
    files = createBackingFiles(dir, 2, FILE_SIZE);
    daemon = await qsd.start(files, FILE_SIZE, dir);
  });

  afterAll(async () => {
    await daemon?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('writes a pattern on 2 exports and reads every byte back intact', async () => {
    const run = await frontend(['--verify', 'write+read', '--bs', '4k-64k', '--qd', '8', '--seed', '7', '--event-idx']);
    expect(run.result.error, run.stderr).toBeUndefined();
    expect(run.status, run.stderr).toBe(0);
    const [write, read] = run.result.phases;
    expect(write!.name).toBe('verify-write');
    expect(read!.name).toBe('verify-read');
    expect(write!.verifiedBytes).toBe(2 * FILE_SIZE);
    expect(read!.verifiedBytes).toBe(2 * FILE_SIZE);
    expect(run.result.totalErrors).toBe(0);
    expect(run.result.totalMismatches).toBe(0);
    expect(run.result.perTargetIos.every((n) => n > 0)).toBe(true);
    expect(run.result.shutdownProblems).toBeNull();
  });

  it('detects a byte corrupted in the backing file', async () => {
    const write = await frontend(['--verify', 'write', '--bs', '64k', '--qd', '4', '--seed', '9']);
    expect(write.status, write.stderr).toBe(0);
    const clean = await frontend(['--verify', 'read', '--bs', '64k', '--qd', '4', '--seed', '9']);
    expect(clean.status, clean.stderr).toBe(0);

    const corruptAt = 5 * 65536 + 1234;
    flipByte(files[1]!, corruptAt);
    const dirty = await frontend(['--verify', 'read', '--bs', '64k', '--qd', '4', '--seed', '9']);
    expect(dirty.status).toBe(1);
    expect(dirty.result.totalMismatches).toBe(1);
    expect(dirty.result.totalErrors).toBe(0);
    expect(dirty.result.firstMismatch).toBe(`target ${join(dir, 'qsd-1.sock')} offset ${5 * 65536} (+1234)`);

    // A different seed is a different pattern: every block mismatches.
    const wrongSeed = await frontend(['--verify', 'read', '--bs', '64k', '--qd', '4', '--seed', '10']);
    expect(wrongSeed.status).toBe(1);
    expect(wrongSeed.result.totalMismatches).toBe((2 * FILE_SIZE) / 65536);
  });

  it.each([
    ['interrupts', []],
    ['EVENT_IDX', ['--event-idx']],
    ['indirect descriptors', ['--indirect']],
    ['polling with EVENT_IDX', ['--poll', '--event-idx']],
  ])('runs a timed random-read workload with %s and measures the back-end CPU', async (_name, extra) => {
    const run = await frontend(['--rw', 'randread', '--bs', '4k-16k', '--qd', '16', '--runtime', '0.3', '--cpu-pid', String(daemon.pid), ...extra]);
    expect(run.status, run.stderr).toBe(0);
    const r = run.result;
    expect(r.ios).toBeGreaterThan(100);
    expect(r.errors).toBe(0);
    expect(r.iops).toBeGreaterThan(0);
    expect(r.latUs.p50).toBeGreaterThan(0);
    expect(r.latUs.p50).toBeLessThanOrEqual(r.latUs.p99);
    expect(r.latUs.p99).toBeLessThanOrEqual(r.latUs.p999);
    expect(r.latUs.p999).toBeLessThanOrEqual(r.latUs.max);
    expect(r.backendCpuUs).toBeGreaterThanOrEqual(0);
    expect(r.shutdownProblems).toBeNull();
  });

  it('fails clearly when the socket is absent', async () => {
    const run = await runFrontend(['--proto', 'blk', '--socket', join(dir, 'absent.sock'), '--runtime', '0.1'], 10_000);
    expect(run.status).toBe(2);
    expect(run.result.error).toMatch(/connect .*absent\.sock/);
  });
});

describe('bench/run.ts --quick', () => {
  it('prints the table and writes JSON and the sweep PNG', () => {
    const out = mkdtempSync('/tmp/vhba-bench-out-');
    try {
      const r = spawnSync(process.execPath, [join(ROOT, 'bench/run.ts'), '--quick', '--systems', 'qsd', '--out', out], { encoding: 'utf8', timeout: 180_000 });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/4k randread QD32 \(IOPS\)/);
      expect(r.stdout).toMatch(/memcpy ceiling/);
      const report = JSON.parse(readFileSync(join(out, 'latest.json'), 'utf8')) as {
        summary: Array<{ key: string; qsd: { median: number } | null }>;
        ceiling: { mbps: { median: number } };
        passthrough: PassthroughReport | null;
      };
      // The passthrough section is on by default: skipped only without tgtd,
      // else it ran for the systems asked for (qsd) and the direct floor.
      expect(report.passthrough).not.toBeNull();
      if (tgtdAvailable()) {
        expect(report.passthrough!.skipped).toBeNull();
        expect(report.passthrough!.paths.map((p) => p.name)).toContain('qsd');
        expect(report.passthrough!.summary.find((s) => s.key === 'pt-randread-qd16-iops')?.qsd?.median).toBeGreaterThan(0);
        expect(r.stdout).toMatch(/passthrough — one tgtd LUN/);
      } else {
        expect(report.passthrough!.skipped).toMatch(/tgtd/);
      }
      expect(report.ceiling.mbps.median).toBeGreaterThan(0);
      for (const key of ['randread-qd1-p50', 'randread-qd32-iops', 'randwrite-qd32-iops', 'sweep-4-mbps', 'randread-qd32-cpu']) {
        expect(report.summary.find((s) => s.key === key)?.qsd?.median, key).toBeGreaterThan(0);
      }
      const png = readFileSync(join(out, 'lun-sweep.png'));
      expect(png.subarray(1, 4).toString('latin1')).toBe('PNG');
      expect(statSync(join(out, 'lun-sweep.png')).size).toBeGreaterThan(5000);
      expect(existsSync(join(out, 'lun-sweep.svg'))).toBe(true);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});

describe.skipIf(!tgtdAvailable())('bench/run.ts --quick --passthrough-only (tgtd on loopback)', () => {
  it('serves one iSCSI LUN through vhba, qsd and libiscsi directly, and reports vhba/qsd', () => {
    const out = mkdtempSync('/tmp/vhba-bench-out-');
    try {
      const r = spawnSync(process.execPath, [join(ROOT, 'bench/run.ts'), '--quick', '--passthrough-only', '--out', out], { encoding: 'utf8', timeout: 180_000 });
      expect(r.status, r.stderr).toBe(0);
      const files = readdirSync(out).filter((f) => f.endsWith('-passthrough.json'));
      expect(files).toHaveLength(1);
      const report = (JSON.parse(readFileSync(join(out, files[0]!), 'utf8')) as { passthrough: PassthroughReport }).passthrough;
      expect(report.skipped).toBeNull();
      expect(report.directSkipped).toBeNull();
      expect(report.paths.map((p) => [p.name, p.startErrors.length])).toEqual([['direct', 0], ['qsd', 0], ['vhba', 0]]);
      expect(report.failures).toBe(0);
      for (const key of ['pt-randread-qd1-p50', 'pt-randread-qd1-p99', 'pt-randread-qd16-iops', 'pt-randwrite-qd16-iops', 'pt-seqread-64k-qd4-mbps']) {
        const row = report.summary.find((s) => s.key === key)!;
        expect(row, key).toBeDefined();
        for (const path of ['direct', 'qsd', 'vhba'] as const) expect(row[path]?.median, `${key} ${path}`).toBeGreaterThan(0);
        expect(row.vhbaOverQsd, key).toBeGreaterThan(0);
        expect(row.vhbaOverDirect, key).toBeGreaterThan(0);
        console.log(`passthrough ${key}: vhba/qsd ${row.vhbaOverQsd!.toFixed(2)}, vhba/direct ${row.vhbaOverDirect!.toFixed(2)}`);
      }
      // Every I/O of every path completed without a SCSI or transport error.
      for (const p of report.paths) for (const w of Object.values(p.runs[0]!)) expect(w.errors, p.name).toBe(0);
      expect(r.stdout).toMatch(/vhba\/qsd/);
      expect(r.stdout).toMatch(/64k seqread QD4 \(MB\/s\)/);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});
