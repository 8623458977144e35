// `npm run bench` (node bench/run.ts [--quick] [--runs N] [--systems qsd,vhba] [--out DIR]
// [--no-passthrough | --passthrough-only]):
// drives vhba (vhost-user-scsi) and qemu-storage-daemon (vhost-user-blk) with
// the same native front-end and identical workloads on identical tmpfs files,
// several runs each, and reports medians with run-to-run spread as a table on
// stdout, JSON under bench/results/, and a PNG of the LUN-bandwidth sweep.
// Workloads (issue 4): 4 KiB randread QD1 latency; 4 KiB randread/randwrite
// QD32 IOPS; seqread 4k–64k QD4 per LUN over 1..32 LUNs; back-end CPU per I/O;
// and the machine's memcpy ceiling measured in the same run. Then the
// passthrough section (bench/lib/passthrough.ts): one tgtd iSCSI LUN through
// vhba's passthrough path, qsd's iscsi driver and libiscsi directly.
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createBackingFiles, removeBackingFiles } from './lib/files.ts';
import { buildNative, runCeiling, runFrontend, type CeilingResult, type FrontendResult } from './lib/native.ts';
import { svgToPng, sweepSvg } from './lib/plot.ts';
import { passthroughTable, runPassthroughSection, type PassthroughReport } from './lib/passthrough.ts';
import { fmt, fmtSpread, spread, table, type Spread } from './lib/stats.ts';
import { qsd, vhba, type RunningSystem, type SystemSpec } from './lib/systems.ts';

interface Workload {
  key: string;
  label: string;
  args: string[];
  targets: number;
  runtimeSec: number;
  warmupSec: number;
}

/** One summary line: a metric of one workload for both systems. */
interface Row {
  key: string;
  label: string;
  unit: string;
  workload: string;
  pick: (r: FrontendResult) => number;
  /** This result expressed as a data rate over the memcpy ceiling (null: not meaningful). */
  share: ((value: number, ceilingMBps: number) => number) | null;
  lowerIsBetter: boolean;
}

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    runs: { type: 'string' },
    systems: { type: 'string', default: 'qsd,vhba' },
    out: { type: 'string', default: fileURLToPath(new URL('./results/', import.meta.url)) },
    'no-event-idx': { type: 'boolean', default: false },
    seconds: { type: 'string' },
    'no-passthrough': { type: 'boolean', default: false },
    'passthrough-only': { type: 'boolean', default: false },
  },
  strict: true,
});

const quick = args.quick;
const runs = Number(args.runs ?? (quick ? 1 : 3));
const seconds = Number(args.seconds ?? (quick ? 0.3 : 5));
const systemNames = args.systems.split(',').filter(Boolean);
const specs: SystemSpec[] = systemNames.map((n) => {
  if (n === 'qsd') return qsd;
  if (n === 'vhba') return vhba;
  throw new Error(`--systems: unknown system ${n} (qsd, vhba)`);
});
if (!Number.isInteger(runs) || runs < 1 || !(seconds > 0)) throw new Error('--runs must be >= 1 and --seconds > 0');

const fileCount = quick ? 4 : 32;
const fileSize = quick ? 16 << 20 : 256 << 20;
const lunCounts = quick ? [1, 2, 4] : [1, 2, 4, 8, 16, 32];
const warmup = quick ? 0.1 : 1;
const sweepSeconds = quick ? seconds : Math.max(seconds * 0.6, 0.5);
const eventIdx = !args['no-event-idx'];
const passthroughOnly = args['passthrough-only'];
const passthrough = !args['no-passthrough'] || passthroughOnly;
if (args['no-passthrough'] && passthroughOnly) throw new Error('--no-passthrough and --passthrough-only exclude each other');
// The passthrough section: 1 run (or --runs), 3 s per workload (0.3 with --quick, or --seconds).
const ptRuns = Number(args.runs ?? 1);
const ptSeconds = Number(args.seconds ?? (quick ? 0.3 : 3));
const ptLunBytes = quick ? 32 << 20 : 256 << 20;

const workloads: Workload[] = [
  { key: 'randread-qd1', label: '4k randread QD1', args: ['--rw', 'randread', '--bs', '4k', '--qd', '1'], targets: 1, runtimeSec: seconds, warmupSec: warmup },
  { key: 'randread-qd32', label: '4k randread QD32', args: ['--rw', 'randread', '--bs', '4k', '--qd', '32'], targets: 1, runtimeSec: seconds, warmupSec: warmup },
  { key: 'randwrite-qd32', label: '4k randwrite QD32', args: ['--rw', 'randwrite', '--bs', '4k', '--qd', '32'], targets: 1, runtimeSec: seconds, warmupSec: warmup },
  ...lunCounts.map((n) => ({
    key: `sweep-${n}`,
    label: `seqread 4k-64k QD4 x${n}`,
    args: ['--rw', 'read', '--bs', '4k-64k', '--qd', '4'],
    targets: n,
    runtimeSec: sweepSeconds,
    warmupSec: warmup / 2,
  })),
];

const cpuRowWorkload = `sweep-${lunCounts.includes(8) ? 8 : lunCounts[lunCounts.length - 1]}`;
const share4k = (mbPerValue: (v: number) => number) => (v: number, c: number) => mbPerValue(v) / c;
const rows: Row[] = [
  ...(['p50', 'p99', 'p999'] as const).map((p) => ({
    key: `randread-qd1-${p}`,
    label: `4k randread QD1 ${p === 'p999' ? 'p99.9' : p} (µs)`,
    unit: 'µs',
    workload: 'randread-qd1',
    pick: (r: FrontendResult) => r.latUs[p],
    share: share4k((v) => 4096 / v), // bytes per µs = MB/s of one QD1 stream
    lowerIsBetter: true,
  })),
  { key: 'randread-qd32-iops', label: '4k randread QD32 (IOPS)', unit: 'IOPS', workload: 'randread-qd32', pick: (r) => r.iops, share: share4k((v) => (v * 4096) / 1e6), lowerIsBetter: false },
  { key: 'randwrite-qd32-iops', label: '4k randwrite QD32 (IOPS)', unit: 'IOPS', workload: 'randwrite-qd32', pick: (r) => r.iops, share: share4k((v) => (v * 4096) / 1e6), lowerIsBetter: false },
  ...lunCounts.map((n) => ({
    key: `sweep-${n}-mbps`,
    label: `seqread 4k-64k QD4, ${n} LUN${n > 1 ? 's' : ''} (MB/s)`,
    unit: 'MB/s',
    workload: `sweep-${n}`,
    pick: (r: FrontendResult) => r.mbps,
    share: (v: number, c: number) => v / c,
    lowerIsBetter: false,
  })),
  ...['randread-qd1', 'randread-qd32', 'randwrite-qd32', cpuRowWorkload].map((w) => ({
    key: `${w}-cpu`,
    label: `back-end CPU per I/O, ${workloads.find((x) => x.key === w)!.label} (µs)`,
    unit: 'µs/IO',
    workload: w,
    pick: (r: FrontendResult) => (r.ios > 0 && r.backendCpuUs >= 0 ? r.backendCpuUs / r.ios : NaN),
    share: null,
    lowerIsBetter: true,
  })),
];

interface SystemOutcome {
  name: string;
  description: string;
  /** Why the system failed to start, one entry per failed run. */
  startErrors: string[];
  /** results[run][workload] */
  runs: Array<Record<string, FrontendResult & { status: number | null }>>;
}

const log = (msg: string): void => void process.stderr.write(`bench: ${msg}\n`);
const workDir = `/dev/shm/vhba-bench-${process.pid}`;
let live: RunningSystem | null = null;
let failures = 0;

async function cleanup(): Promise<void> {
  if (live) await live.stop().catch(() => undefined);
  live = null;
  removeBackingFiles(workDir);
}
process.on('SIGINT', () => {
  void cleanup().finally(() => process.exit(130));
});

async function runSystem(spec: SystemSpec, outcome: SystemOutcome, run: number, files: string[]): Promise<void> {
  try {
    live = await spec.start(files, fileSize, workDir);
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    outcome.startErrors.push(message);
    log(`run ${run + 1}: ${spec.name} did not start: ${message}`);
    return;
  }
  const results: SystemOutcome['runs'][number] = {};
  outcome.runs.push(results);
  try {
    for (const w of workloads) {
      const fargs = [
        ...live.frontendArgs(w.targets),
        ...w.args,
        '--runtime', String(w.runtimeSec),
        '--warmup', String(w.warmupSec),
        '--cpu-pid', String(live.pid),
        '--seed', String(run + 1),
        '--quiet',
        ...(eventIdx ? ['--event-idx'] : []),
      ];
      const r = await runFrontend(fargs, (w.runtimeSec + w.warmupSec + 60) * 1000);
      results[w.key] = { ...r.result, status: r.status };
      if (r.status !== 0) {
        failures++;
        log(`run ${run + 1} ${spec.name} ${w.key}: FAILED (status ${r.status}): ${r.result.error ?? r.result.firstError ?? r.result.shutdownProblems ?? ''}\n${r.stderr.trim()}`);
      } else {
        log(`run ${run + 1} ${spec.name} ${w.key}: ${fmt(r.result.iops)} IOPS, ${fmt(r.result.mbps)} MB/s, p50 ${fmt(r.result.latUs.p50)} µs`);
      }
    }
  } finally {
    await live.stop();
    live = null;
  }
}

/** Runs the passthrough section and prints its table; null when --no-passthrough. */
async function passthroughSection(): Promise<PassthroughReport | null> {
  if (!passthrough) return null;
  mkdirSync(workDir, { recursive: true });
  try {
    const report = await runPassthroughSection({
      quick,
      runs: ptRuns,
      seconds: ptSeconds,
      warmupSeconds: quick ? 0.1 : 0.5,
      lunBytes: ptLunBytes,
      eventIdx,
      systems: systemNames as Array<'qsd' | 'vhba'>,
      workDir,
      log,
    });
    console.log(`
${passthroughTable(report)}`);
    return report;
  } finally {
    removeBackingFiles(workDir);
  }
}

/** Failed starts and failed workload runs of the passthrough section. */
function passthroughFailures(report: PassthroughReport | null): number {
  if (!report) return 0;
  return report.failures + report.paths.reduce((n, p) => n + p.startErrors.length, 0);
}

/** --passthrough-only: the section alone, JSON as `<time>-passthrough.json`. */
async function mainPassthroughOnly(): Promise<number> {
  const startedAt = new Date();
  log('building bench/frontend');
  buildNative();
  const report = await passthroughSection();
  mkdirSync(args.out, { recursive: true });
  const stamp = startedAt.toISOString().replace(/[:.]/g, '-');
  const json = JSON.stringify({
    schema: 'vhba-bench/1',
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    command: `node ${process.argv.slice(1).join(' ')}`,
    machine: { cpuModel: cpus()[0]?.model ?? 'unknown', cpus: cpus().length, kernel: release(), loadAvgAtEnd: loadavg() },
    passthrough: report,
  }, null, 2) + '\n';
  writeFileSync(join(args.out, `${stamp}-passthrough.json`), json);
  console.log(`\nwrote ${join(args.out, `${stamp}-passthrough.json`)}`);
  const bad = passthroughFailures(report);
  if (bad) log(`passthrough: ${bad} start(s) or workload run(s) failed`);
  return bad ? 1 : 0;
}

async function main(): Promise<number> {
  if (passthroughOnly) return mainPassthroughOnly();
  const startedAt = new Date();
  const loadStart = loadavg();
  log('building bench/frontend');
  buildNative();
  log(`creating ${fileCount} files of ${fileSize >> 20} MiB in ${workDir}`);
  const files = createBackingFiles(workDir, fileCount, fileSize);
  const outcomes: SystemOutcome[] = specs.map((s) => ({ name: s.name, description: s.describe(), startErrors: [], runs: [] }));
  const ceilings: CeilingResult[] = [];
  try {
    for (let run = 0; run < runs; run++) {
      ceilings.push(runCeiling(quick ? 0.3 : 2));
      log(`run ${run + 1}: memcpy ceiling ${fmt(ceilings[ceilings.length - 1]!.mbps)} MB/s`);
      // Alternate the order so neither system always runs on a warmer or quieter machine.
      const order = run % 2 === 0 ? specs.map((_, i) => i) : specs.map((_, i) => specs.length - 1 - i);
      for (const i of order) await runSystem(specs[i]!, outcomes[i]!, run, files);
    }
  } finally {
    await cleanup();
  }

  const ceiling = spread(ceilings.map((c) => c.mbps));
  const ceilingMBps = ceiling?.median ?? NaN;
  const byName = new Map(outcomes.map((o) => [o.name, o]));
  const metric = (name: string, row: Row): Spread | null => {
    const o = byName.get(name);
    if (!o) return null;
    return spread(o.runs.map((r) => r[row.workload]).filter((r) => r && r.status === 0).map((r) => row.pick(r!)));
  };
  const summary = rows.map((row) => {
    const q = metric('qsd', row);
    const v = metric('vhba', row);
    return {
      key: row.key,
      label: row.label,
      unit: row.unit,
      lowerIsBetter: row.lowerIsBetter,
      qsd: q,
      vhba: v,
      vhbaOverQsd: q && v ? v.median / q.median : null,
      vhbaMinusQsd: q && v ? v.median - q.median : null,
      vhbaOverCeiling: v && row.share ? row.share(v.median, ceilingMBps) : null,
      qsdOverCeiling: q && row.share ? row.share(q.median, ceilingMBps) : null,
    };
  });

  // Table.
  const cpu = cpus();
  const machine = { cpuModel: cpu[0]?.model ?? 'unknown', cpus: cpu.length, memTotalBytes: totalmem(), kernel: release(), loadAvgAtStart: loadStart, loadAvgAtEnd: loadavg() };
  const pct = (x: number | null): string => (x === null || !Number.isFinite(x) ? '—' : `${(x * 100).toFixed(x < 0.1 ? 1 : 0)} %`);
  const ratio = (s: (typeof summary)[number]): string => {
    if (s.vhbaOverQsd === null) return '—';
    const r = s.vhbaOverQsd.toFixed(2);
    return s.unit === 'µs' ? `${r} (${s.vhbaMinusQsd! >= 0 ? '+' : ''}${fmt(s.vhbaMinusQsd!)} µs)` : r;
  };
  const header = ['metric', 'qsd (blk)', 'vhba (scsi)', 'vhba/qsd', 'vhba/ceiling', 'qsd/ceiling'];
  const tableRows = summary.map((s) => [s.label, fmtSpread(s.qsd), fmtSpread(s.vhba), ratio(s), pct(s.vhbaOverCeiling), pct(s.qsdOverCeiling)]);
  console.log(`\nvhba bench — ${machine.cpus} × ${machine.cpuModel}, kernel ${machine.kernel}, load ${loadStart.map((l) => l.toFixed(1)).join(' ')}`);
  console.log(`${runs} run(s), median [min–max]; ${fileCount} files × ${fileSize >> 20} MiB on tmpfs; EVENT_IDX ${eventIdx ? 'on' : 'off'}`);
  console.log(`memcpy ceiling (4k–64k blocks, 1 thread): ${fmtSpread(ceiling)} MB/s`);
  for (const o of outcomes) {
    const failed = o.startErrors.length ? ` — FAILED TO START in ${o.startErrors.length} of ${runs} run(s): ${o.startErrors[0]!.split('\n').filter(Boolean).slice(0, 2).join(' ')}` : '';
    console.log(`${o.name}: ${o.description}${failed}`);
  }
  console.log('vhba/qsd: above 1 is better for IOPS and MB/s, worse for µs; ceiling columns: the result as a data rate');
  console.log('(latency: 4 KiB per QD1 round trip; IOPS × 4 KiB) over memcpy bandwidth\n');
  console.log(table(header, tableRows));

  const ptReport = await passthroughSection();

  // JSON.
  mkdirSync(args.out, { recursive: true });
  const stamp = startedAt.toISOString().replace(/[:.]/g, '-');
  const report = {
    schema: 'vhba-bench/1',
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    command: `node ${process.argv.slice(1).join(' ')}`,
    machine,
    config: { quick, runs, fileCount, fileSizeBytes: fileSize, lunCounts, seconds, sweepSeconds, warmupSeconds: warmup, eventIdx, workloads },
    ceiling: { mbps: ceiling, runs: ceilings },
    summary,
    systems: outcomes,
    passthrough: ptReport,
  };
  const json = JSON.stringify(report, null, 2) + '\n';
  writeFileSync(join(args.out, `${stamp}.json`), json);
  writeFileSync(join(args.out, 'latest.json'), json);

  // Plot.
  const colors: Record<string, string> = { qsd: '#2471a3', vhba: '#e67e22' };
  const svg = sweepSvg({
    title: 'LUN-bandwidth sweep: sequential read, 4k–64k blocks, QD4 per LUN',
    subtitle: `${machine.cpus} × ${machine.cpuModel}, load ${loadStart[0]!.toFixed(1)} at start; ${runs} run(s); ${fileCount} × ${fileSize >> 20} MiB tmpfs files; ${startedAt.toISOString().slice(0, 16)}Z`,
    lunCounts,
    ceilingMBps: Number.isFinite(ceilingMBps) ? ceilingMBps : null,
    series: outcomes.map((o) => ({
      label: o.name === 'qsd' ? 'qsd · vhost-user-blk' : 'vhba · vhost-user-scsi',
      color: colors[o.name] ?? '#333',
      points: lunCounts.map((n) => ({ luns: n, value: summary.find((s) => s.key === `sweep-${n}-mbps`)![o.name as 'qsd' | 'vhba'] })),
    })),
  });
  const svgPath = join(args.out, 'lun-sweep.svg');
  writeFileSync(svgPath, svg);
  svgToPng(svgPath, join(args.out, 'lun-sweep.png'));
  console.log(`\nwrote ${join(args.out, `${stamp}.json`)}, latest.json, lun-sweep.svg, lun-sweep.png`);

  const startFailures = outcomes.reduce((n, o) => n + o.startErrors.length, 0);
  if (startFailures) log(`${startFailures} system start(s) failed: ${outcomes.filter((o) => o.startErrors.length).map((o) => o.name).join(', ')}`);
  if (failures) log(`${failures} workload run(s) failed`);
  const ptFailures = passthroughFailures(ptReport);
  if (ptFailures) log(`passthrough: ${ptFailures} start(s) or workload run(s) failed`);
  return startFailures || failures || ptFailures ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  async (err: unknown) => {
    await cleanup();
    log(err instanceof Error ? err.stack ?? err.message : String(err));
    process.exit(2);
  },
);
