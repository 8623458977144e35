// The bench's native programs (bench/frontend): building them with make, and
// running the vhost-user front-end and the memcpy ceiling, each answering one
// JSON line on stdout.
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** Directory holding the Makefile and build/. */
export const FRONTEND_DIR = fileURLToPath(new URL('../frontend/', import.meta.url));
export const FRONTEND_BIN = `${FRONTEND_DIR}build/vhost-bench`;
export const CEILING_BIN = `${FRONTEND_DIR}build/memcpy-ceiling`;

/** Latency percentiles in microseconds, as the front-end prints them. */
export interface LatencyUs {
  p50: number;
  p99: number;
  p999: number;
  mean: number;
  min: number;
  max: number;
}

/** The front-end's JSON line (fields of the last phase at top level). */
export interface FrontendResult {
  error?: string;
  proto: string;
  rw: string;
  ios: number;
  errors: number;
  bytes: number;
  seconds: number;
  iops: number;
  mbps: number;
  latUs: LatencyUs;
  frontendCpuUs: number;
  backendCpuUs: number;
  totalErrors: number;
  totalMismatches: number;
  shutdownProblems: string | null;
  firstError: string | null;
  firstMismatch: string | null;
  perTargetIos: number[];
  phases: Array<{ name: string; ios: number; errors: number; verifiedBytes: number; mismatches: number; firstMismatch: string | null }>;
}

/** A finished front-end run: its exit status, parsed JSON and stderr. */
export interface FrontendRun {
  status: number | null;
  result: FrontendResult;
  stderr: string;
}

/** Builds the native programs if any source changed (make decides); throws with make's output on failure. */
export function buildNative(): void {
  const r = spawnSync('nice', ['make', '-s', '-C', FRONTEND_DIR], { encoding: 'utf8' });
  if (r.error) throw new Error(`cannot run make: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`building bench/frontend failed:\n${r.stdout}${r.stderr}`);
}

/** Runs the front-end with `args`; resolves with its JSON even when it reports
 * failures (status 1 or 2); rejects only if it printed no JSON or timed out. */
export function runFrontend(args: string[], timeoutMs: number): Promise<FrontendRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(FRONTEND_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`vhost-bench timed out after ${timeoutMs} ms: ${args.join(' ')}\n${stderr}`));
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (status) => {
      clearTimeout(timer);
      const line = stdout.trim().split('\n').pop() ?? '';
      try {
        resolve({ status, result: JSON.parse(line) as FrontendResult, stderr });
      } catch {
        reject(new Error(`vhost-bench printed no JSON (status ${status}): ${args.join(' ')}\n${stdout}${stderr}`));
      }
    });
  });
}

/** The memcpy ceiling's JSON line. */
export interface CeilingResult {
  mbps: number;
  copies: number;
  seconds: number;
  bsMin: number;
  bsMax: number;
}

/** Measures memcpy bandwidth for blocks uniform in [bsMinKiB, bsMaxKiB]. */
export function runCeiling(seconds: number, bsMinKiB = 4, bsMaxKiB = 64): CeilingResult {
  const r = spawnSync(CEILING_BIN, ['--seconds', String(seconds), '--bs', `${bsMinKiB}-${bsMaxKiB}`], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`memcpy-ceiling failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim()) as CeilingResult;
}
