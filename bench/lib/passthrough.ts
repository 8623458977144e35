// The bench's passthrough section (issue 8): one tgtd iSCSI LUN on loopback
// (backing file on tmpfs, 512-byte blocks) served
//  - by vhba as an iSCSI passthrough LUN (the engine's libiscsi path) behind
//    vhost-user-scsi,
//  - by qemu-storage-daemon's iscsi block driver (QEMU's libiscsi path)
//    exported as vhost-user-blk,
// both driven by the same native front-end with the same workloads and seeds,
// plus the floor: bench/iscsi-direct, libiscsi straight to the LUN at the same
// queue depth with no vhost-user hop. tgtd is the shared bottleneck; the
// ratios show what each path adds on top of it.
import { randomFillSync } from 'node:crypto';
import { closeSync, openSync, writeSync, rmSync, existsSync } from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { startTgtd, tgtdAvailable, type Tgtd } from '../../test/passthrough/tgtd.ts';
import { FRONTEND_DIR, runFrontend, type FrontendResult } from './native.ts';
import { fmt, fmtSpread, spread, table, type Spread } from './stats.ts';
import { stopChild, VHBA_ENGINE, waitFor, type RunningSystem } from './systems.ts';

/** The libiscsi-only floor program (bench/iscsi-direct). */
export const ISCSI_DIRECT_BIN = `${FRONTEND_DIR}build/iscsi-direct`;

/** Who serves the LUN: the two systems over vhost-user, and the direct floor. */
export type PassthroughPath = 'direct' | 'qsd' | 'vhba';

/** The LUN both systems reach. */
export interface IscsiLun {
  portal: string;
  iqn: string;
  lun: number;
}

/** Section settings, derived from bench/run.ts's flags. */
export interface PassthroughConfig {
  quick: boolean;
  runs: number;
  seconds: number;
  warmupSeconds: number;
  lunBytes: number;
  eventIdx: boolean;
  /** Which vhost-user systems to run (the direct floor always runs when it builds). */
  systems: Array<'qsd' | 'vhba'>;
  /** tmpfs directory for tgtd's backing file and the sockets. */
  workDir: string;
  log: (msg: string) => void;
}

interface PtWorkload {
  key: string;
  label: string;
  rw: 'randread' | 'randwrite' | 'read';
  bs: '4k' | '64k';
  qd: number;
}

/** The four workloads, identical for every path. */
export const PT_WORKLOADS: PtWorkload[] = [
  { key: 'pt-randread-qd1', label: '4k randread QD1', rw: 'randread', bs: '4k', qd: 1 },
  { key: 'pt-randread-qd16', label: '4k randread QD16', rw: 'randread', bs: '4k', qd: 16 },
  { key: 'pt-randwrite-qd16', label: '4k randwrite QD16', rw: 'randwrite', bs: '4k', qd: 16 },
  { key: 'pt-seqread-64k-qd4', label: '64k seqread QD4', rw: 'read', bs: '64k', qd: 4 },
];

type PtResult = Pick<FrontendResult, 'ios' | 'errors' | 'iops' | 'mbps' | 'latUs' | 'backendCpuUs' | 'error' | 'firstError'> & { status: number | null };

interface PtRow {
  key: string;
  label: string;
  unit: string;
  workload: string;
  pick: (r: PtResult) => number;
}

const PT_ROWS: PtRow[] = [
  { key: 'pt-randread-qd1-p50', label: '4k randread QD1 p50 (µs)', unit: 'µs', workload: 'pt-randread-qd1', pick: (r) => r.latUs.p50 },
  { key: 'pt-randread-qd1-p99', label: '4k randread QD1 p99 (µs)', unit: 'µs', workload: 'pt-randread-qd1', pick: (r) => r.latUs.p99 },
  { key: 'pt-randread-qd16-iops', label: '4k randread QD16 (IOPS)', unit: 'IOPS', workload: 'pt-randread-qd16', pick: (r) => r.iops },
  { key: 'pt-randwrite-qd16-iops', label: '4k randwrite QD16 (IOPS)', unit: 'IOPS', workload: 'pt-randwrite-qd16', pick: (r) => r.iops },
  { key: 'pt-seqread-64k-qd4-mbps', label: '64k seqread QD4 (MB/s)', unit: 'MB/s', workload: 'pt-seqread-64k-qd4', pick: (r) => r.mbps },
  {
    key: 'pt-randread-qd16-cpu',
    label: 'back-end CPU per I/O, 4k randread QD16 (µs)',
    unit: 'µs/IO',
    workload: 'pt-randread-qd16',
    pick: (r) => (r.ios > 0 && r.backendCpuUs >= 0 ? r.backendCpuUs / r.ios : NaN),
  },
];

/** One path's results: start failures and results[run][workload]. */
export interface PtOutcome {
  name: PassthroughPath;
  description: string;
  startErrors: string[];
  runs: Array<Record<string, PtResult>>;
}

/** One summary row over the paths. */
export interface PtSummary {
  key: string;
  label: string;
  unit: string;
  direct: Spread | null;
  qsd: Spread | null;
  vhba: Spread | null;
  vhbaOverQsd: number | null;
  vhbaOverDirect: number | null;
  qsdOverDirect: number | null;
}

/** What the section reports (the JSON's `passthrough` field). */
export interface PassthroughReport {
  skipped: string | null;
  config: Omit<PassthroughConfig, 'log'> & { blockSize: number; workloads: PtWorkload[] };
  target: { portal: string; iqn: string; lun: number; tgtd: string } | null;
  /** Why the direct floor did not run (null: it ran). */
  directSkipped: string | null;
  paths: PtOutcome[];
  summary: PtSummary[];
  /** Workload runs that failed (non-zero status), over all paths. */
  failures: number;
}

const BLOCK_SIZE = 512;

/** vhba: bench/vhba-engine.ts with the LUN attached as an iSCSI passthrough LUN at 0:0. */
async function startVhba(lun: IscsiLun, dir: string): Promise<RunningSystem> {
  const socket = join(dir, 'vhba-pt.sock');
  rmSync(socket, { force: true });
  const args = [VHBA_ENGINE, '--socket', socket, '--iscsi-portal', lun.portal, '--iscsi-iqn', lun.iqn, '--iscsi-lun', String(lun.lun)];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  await waitFor(() => stdout.includes('"ready":true') && existsSync(socket), child, 'vhba engine (iSCSI passthrough)', 60_000, () => stderr);
  return { pid: child.pid!, frontendArgs: () => ['--proto', 'scsi', '--socket', socket, '--luns', '1'], stop: () => stopChild(child) };
}

/** The qemu-storage-daemon command line: QEMU's iscsi block driver (block-iscsi.so,
 * Debian qemu-block-extra; options of BlockdevOptionsIscsi in qapi/block-core.json)
 * exported as vhost-user-blk. */
export function qsdIscsiArgs(lun: IscsiLun, socket: string): string[] {
  return [
    '--blockdev', `driver=iscsi,node-name=pt,transport=tcp,portal=${lun.portal},target=${lun.iqn},lun=${lun.lun},initiator-name=iqn.2026-11.io.vhba:bench-qsd`,
    '--export', `type=vhost-user-blk,id=pt0,node-name=pt,addr.type=unix,addr.path=${socket},writable=on,logical-block-size=${BLOCK_SIZE}`,
  ];
}

async function startQsd(lun: IscsiLun, dir: string): Promise<RunningSystem> {
  const socket = join(dir, 'qsd-pt.sock');
  rmSync(socket, { force: true });
  const child = spawn('qemu-storage-daemon', qsdIscsiArgs(lun, socket), { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  await waitFor(() => existsSync(socket), child, 'qemu-storage-daemon (iscsi driver)', 20_000, () => stderr);
  return { pid: child.pid!, frontendArgs: () => ['--proto', 'blk', '--socket', socket], stop: () => stopChild(child) };
}

/** Runs bench/iscsi-direct once; its JSON line has the fields PtResult needs. */
function runDirect(lun: IscsiLun, w: PtWorkload, cfg: PassthroughConfig, seed: number): Promise<PtResult> {
  const args = ['--portal', lun.portal, '--iqn', lun.iqn, '--lun', String(lun.lun), '--rw', w.rw, '--bs', w.bs, '--qd', String(w.qd),
    '--runtime', String(cfg.seconds), '--warmup', String(cfg.warmupSeconds), '--seed', String(seed)];
  return new Promise((resolve, reject) => {
    const child = spawn(ISCSI_DIRECT_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), (cfg.seconds + cfg.warmupSeconds + 60) * 1000);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      try {
        resolve({ ...(JSON.parse(stdout.trim().split('\n').pop() ?? '') as PtResult), status });
      } catch {
        reject(new Error(`iscsi-direct printed no JSON (status ${status}): ${args.join(' ')}\n${stdout}${stderr}`));
      }
    });
  });
}

/** Builds bench/iscsi-direct; returns why not when it cannot (no libiscsi-dev). */
function buildDirect(): string | null {
  const r = spawnSync('nice', ['make', '-s', '-C', FRONTEND_DIR, 'build/iscsi-direct'], { encoding: 'utf8' });
  if (r.error) return `cannot run make: ${r.error.message}`;
  return r.status === 0 ? null : `building bench/iscsi-direct failed (libiscsi-dev?): ${(r.stdout + r.stderr).trim().split('\n').slice(-2).join(' ')}`;
}

/** Fills tgtd's (sparse) backing file with random bytes so reads move real data. */
function fillBacking(path: string, sizeBytes: number): void {
  const chunk = Buffer.alloc(4 << 20);
  const fd = openSync(path, 'r+');
  try {
    for (let off = 0; off < sizeBytes; off += chunk.length) {
      randomFillSync(chunk);
      const n = Math.min(chunk.length, sizeBytes - off);
      for (let done = 0; done < n; ) done += writeSync(fd, chunk, done, n - done, off + done);
    }
  } finally {
    closeSync(fd);
  }
}

const ratio = (a: Spread | null, b: Spread | null): number | null => (a && b && b.median !== 0 ? a.median / b.median : null);

/** Runs the section: tgtd up, every path × workload × run, tgtd down. Never throws
 * for a path that fails to start (recorded in startErrors); throws only if tgtd
 * itself cannot start. */
export async function runPassthroughSection(cfg: PassthroughConfig): Promise<PassthroughReport> {
  const { log, ...config } = cfg;
  const report: PassthroughReport = {
    skipped: null,
    config: { ...config, blockSize: BLOCK_SIZE, workloads: PT_WORKLOADS },
    target: null,
    directSkipped: null,
    paths: [],
    summary: [],
    failures: 0,
  };
  if (!tgtdAvailable()) {
    report.skipped = 'tgtd needs root and /usr/sbin/tgtd, /usr/sbin/tgtadm (Debian tgt)';
    log(`passthrough: skipped: ${report.skipped}`);
    return report;
  }
  report.directSkipped = buildDirect();
  if (report.directSkipped) log(`passthrough: direct floor skipped: ${report.directSkipped}`);
  const qsdVersion = spawnSync('qemu-storage-daemon', ['--version'], { encoding: 'utf8' }).stdout?.split('\n')[0] ?? 'qemu-storage-daemon';
  const starters: Array<{ name: PassthroughPath; description: string; start?: (lun: IscsiLun, dir: string) => Promise<RunningSystem> }> = [
    ...(report.directSkipped ? [] : [{ name: 'direct' as const, description: 'bench/iscsi-direct: libiscsi async, one session, no vhost-user hop' }]),
    ...cfg.systems.map((n) =>
      n === 'qsd'
        ? { name: 'qsd' as const, description: `${qsdVersion}, iscsi block driver, vhost-user-blk export`, start: startQsd }
        : { name: 'vhba' as const, description: 'vhba engine, iSCSI passthrough LUN (native path, libiscsi), vhost-user-scsi', start: startVhba },
    ),
  ];
  report.paths = starters.map((s) => ({ name: s.name, description: s.description, startErrors: [], runs: [] }));

  log(`passthrough: starting tgtd with a ${cfg.lunBytes >> 20} MiB LUN (${BLOCK_SIZE}-byte blocks) under ${cfg.workDir}`);
  const tgt: Tgtd = await startTgtd({ luns: [{ sizeBytes: cfg.lunBytes, blockSize: BLOCK_SIZE }], parentDir: cfg.workDir });
  const lun: IscsiLun = { portal: tgt.portal, iqn: tgt.iqn, lun: tgt.luns[0]! };
  const tgtdVersion = spawnSync('/usr/sbin/tgtd', ['--version'], { encoding: 'utf8' }).stdout?.trim() || 'unknown';
  report.target = { ...lun, tgtd: `tgtd ${tgtdVersion}` };
  try {
    fillBacking(tgt.backingPaths[0]!, cfg.lunBytes);
    for (let run = 0; run < cfg.runs; run++) {
      const order = run % 2 === 0 ? starters.map((_, i) => i) : starters.map((_, i) => starters.length - 1 - i);
      for (const i of order) {
        const s = starters[i]!;
        const outcome = report.paths[i]!;
        let system: RunningSystem | null = null;
        if (s.start) {
          try {
            system = await s.start(lun, cfg.workDir);
          } catch (err) {
            const message = err instanceof Error ? err.message : String(err);
            outcome.startErrors.push(message);
            log(`passthrough run ${run + 1}: ${s.name} did not start: ${message}`);
            continue;
          }
        }
        const results: Record<string, PtResult> = {};
        outcome.runs.push(results);
        try {
          for (const w of PT_WORKLOADS) {
            let r: PtResult;
            if (system) {
              const fargs = [...system.frontendArgs(1), '--rw', w.rw, '--bs', w.bs, '--qd', String(w.qd), '--runtime', String(cfg.seconds),
                '--warmup', String(cfg.warmupSeconds), '--cpu-pid', String(system.pid), '--seed', String(run + 1), '--quiet',
                ...(cfg.eventIdx ? ['--event-idx'] : [])];
              const f = await runFrontend(fargs, (cfg.seconds + cfg.warmupSeconds + 60) * 1000);
              r = { ...f.result, status: f.status };
            } else {
              r = await runDirect(lun, w, cfg, run + 1);
            }
            results[w.key] = r;
            if (r.status !== 0) {
              report.failures++;
              log(`passthrough run ${run + 1} ${s.name} ${w.key}: FAILED (status ${r.status}): ${r.error ?? r.firstError ?? ''}`);
            } else {
              log(`passthrough run ${run + 1} ${s.name} ${w.key}: ${fmt(r.iops)} IOPS, ${fmt(r.mbps)} MB/s, p50 ${fmt(r.latUs.p50)} µs`);
            }
          }
        } finally {
          await system?.stop();
        }
      }
    }
  } finally {
    // Every initiator has logged out by now: SIGKILL is quicker than tgtd's
    // orderly shutdown (which waits seconds) and loses nothing.
    await tgt.kill();
    await tgt.stop();
  }

  const metric = (name: PassthroughPath, row: PtRow): Spread | null => {
    const o = report.paths.find((p) => p.name === name);
    if (!o) return null;
    return spread(o.runs.map((r) => r[row.workload]).filter((r) => r && r.status === 0).map((r) => row.pick(r!)));
  };
  report.summary = PT_ROWS.map((row) => {
    const direct = metric('direct', row);
    const qsd = metric('qsd', row);
    const vhba = metric('vhba', row);
    return {
      key: row.key, label: row.label, unit: row.unit, direct, qsd, vhba,
      vhbaOverQsd: ratio(vhba, qsd), vhbaOverDirect: ratio(vhba, direct), qsdOverDirect: ratio(qsd, direct),
    };
  });
  return report;
}

/** The section's table and its header lines. */
export function passthroughTable(report: PassthroughReport): string {
  if (report.skipped) return `passthrough: skipped (${report.skipped})`;
  const c = report.config;
  const r2 = (x: number | null): string => (x === null || !Number.isFinite(x) ? '—' : x.toFixed(2));
  const lines = [
    `passthrough — one tgtd LUN (${report.target?.tgtd ?? 'tgtd'}), ${c.lunBytes >> 20} MiB on tmpfs, ${c.blockSize}-byte blocks; ` +
      `${c.runs} run(s) × ${c.seconds} s, median [min–max]`,
    ...report.paths.map((p) => {
      const failed = p.startErrors.length ? ` — FAILED TO START: ${p.startErrors[0]!.split('\n').filter(Boolean).slice(0, 2).join(' ')}` : '';
      return `${p.name}: ${p.description}${failed}`;
    }),
    ...(report.directSkipped ? [`direct: skipped (${report.directSkipped})`] : []),
    'ratios: above 1 is better for IOPS and MB/s, worse for µs\n',
    table(
      ['metric', 'direct (libiscsi)', 'qsd (blk, iscsi)', 'vhba (scsi, pt)', 'vhba/qsd', 'vhba/direct', 'qsd/direct'],
      report.summary.map((s) => [s.label, fmtSpread(s.direct), fmtSpread(s.qsd), fmtSpread(s.vhba), r2(s.vhbaOverQsd), r2(s.vhbaOverDirect), r2(s.qsdOverDirect)]),
    ),
  ];
  return lines.join('\n');
}
