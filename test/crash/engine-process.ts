// Runs the engine in a child process (bench/vhba-engine.ts: createEngine(),
// one controller, one LUN per file) so a test can SIGKILL it, optionally
// under `strace -f` to see the syscalls its writes and flushes become.
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const ENGINE = fileURLToPath(new URL('../../bench/vhba-engine.ts', import.meta.url));

/** A running engine process. */
export interface EngineProcess {
  child: ChildProcess;
  /** pid of the node process (the traced one under strace). */
  pid: number;
  /** Resolves when the process exited. */
  exited: Promise<void>;
  stderr: () => string;
}

/** Starts the engine on `socket` with `file` as LUN 0; resolves once it listens.
 * `straceOut`: trace openat, pwrite(v), fdatasync and fsync of every thread into that file. */
export async function startEngine(socket: string, file: string, sizeBytes: number, straceOut?: string): Promise<EngineProcess> {
  const nodeArgs = [ENGINE, '--socket', socket, '--size', String(sizeBytes), '--file', file, '--queue-size', '128'];
  const child = straceOut
    ? spawn('strace', ['-f', '-qq', '-y', '-e', 'trace=openat,pwrite64,pwritev,pwritev2,write,fdatasync,fsync,io_uring_enter,io_uring_setup', '-o', straceOut, process.execPath, ...nodeArgs], { stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn(process.execPath, nodeArgs, { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => { err = (err + d.toString()).slice(-8000); });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const ready = await new Promise<{ pid: number }>((resolve, reject) => {
    let out = '';
    const t = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`engine not ready in 120 s: ${err}`)); }, 120_000);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n').find((l) => l.includes('"ready"'));
      if (line) { clearTimeout(t); resolve(JSON.parse(line) as { pid: number }); }
    });
    child.once('exit', (code) => { clearTimeout(t); reject(new Error(`engine exited (${code}): ${err}`)); });
  });
  return { child, pid: ready.pid, exited, stderr: () => err };
}

/** SIGKILLs the engine (the node process; under strace, strace then exits too) and waits. */
export async function killEngine(e: EngineProcess): Promise<void> {
  try { process.kill(e.pid, 'SIGKILL'); } catch { /* already gone */ }
  await e.exited;
}

/** Open fds of `pid` that refer to `path`, with their open flags (octal, /proc/PID/fdinfo). */
export function openFlagsOf(pid: number, path: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const name of readdirSync(`/proc/${pid}/fd`)) {
    let target: string;
    try { target = readlinkSync(`/proc/${pid}/fd/${name}`); } catch { continue; }
    if (target !== path) continue;
    const info = readFileSync(`/proc/${pid}/fdinfo/${name}`, 'utf8');
    const m = /flags:\s*([0-7]+)/.exec(info);
    if (m) out.set(Number(name), parseInt(m[1]!, 8));
  }
  return out;
}

/** O_DSYNC on Linux x86-64/arm64 (asm-generic/fcntl.h). */
export const O_DSYNC = 0o10000;
