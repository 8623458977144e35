// The two systems under test, started the same way on the same files:
//  - qsd:  qemu-storage-daemon, one vhost-user-blk export per file (one
//          socket each), driven by the front-end's blk personality;
//  - vhba: bench/vhba-engine.ts, one vhost-user-scsi controller with one LUN
//          per file behind a single socket, driven by the scsi personality.
// Each exposes the pid whose CPU time is charged to it.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** A running system. */
export interface RunningSystem {
  /** Process whose /proc/<pid>/stat CPU time is the back-end's. */
  pid: number;
  /** Front-end arguments addressing the first `targets` LUNs/exports. */
  frontendArgs(targets: number): string[];
  stop(): Promise<void>;
}

/** A system the bench can start. */
export interface SystemSpec {
  name: 'qsd' | 'vhba';
  /** One-line description for the table and JSON. */
  describe(): string;
  start(files: string[], sizeBytes: number, socketDir: string): Promise<RunningSystem>;
}

/** bench/vhba-engine.ts, the engine process. */
export const VHBA_ENGINE = fileURLToPath(new URL('../vhba-engine.ts', import.meta.url));

/** Resolves once `cond()` holds (polled every 20 ms); rejects if the child exits first or after `timeoutMs` (then SIGKILLs it). */
export function waitFor(cond: () => boolean, child: ChildProcess, what: string, timeoutMs: number, stderr: () => string): Promise<void> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const onExit = (code: number | null, signal: string | null): void => {
      clearInterval(timer);
      reject(new Error(`${what} exited (code ${code}, signal ${signal}) before it was ready:\n${stderr()}`));
    };
    child.once('exit', onExit);
    const timer = setInterval(() => {
      if (cond()) {
        clearInterval(timer);
        child.off('exit', onExit);
        resolve();
      } else if (Date.now() - started > timeoutMs) {
        clearInterval(timer);
        child.off('exit', onExit);
        child.kill('SIGKILL');
        reject(new Error(`${what} not ready after ${timeoutMs} ms:\n${stderr()}`));
      }
    }, 20);
  });
}

/** Sends SIGTERM, then SIGKILL after `graceMs`; resolves when the child is gone. */
export function stopChild(child: ChildProcess, graceMs = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/** The qemu-storage-daemon command line: per file a file blockdev and a vhost-user-blk export. */
export function qsdArgs(files: string[], sockets: string[]): string[] {
  const args: string[] = [];
  files.forEach((file, i) => {
    args.push('--blockdev', `driver=file,node-name=f${i},filename=${file},cache.direct=off,aio=threads`);
    args.push('--export', `type=vhost-user-blk,id=e${i},node-name=f${i},addr.type=unix,addr.path=${sockets[i]},writable=on`);
  });
  return args;
}

export const qsd: SystemSpec = {
  name: 'qsd',
  describe() {
    const r = spawnSync('qemu-storage-daemon', ['--version'], { encoding: 'utf8' });
    return r.status === 0 ? r.stdout.split('\n')[0]! : 'qemu-storage-daemon (version unknown)';
  },
  async start(files, _sizeBytes, socketDir) {
    const sockets = files.map((_, i) => join(socketDir, `qsd-${i}.sock`));
    for (const s of sockets) rmSync(s, { force: true });
    const child = spawn('qemu-storage-daemon', qsdArgs(files, sockets), { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    await waitFor(() => sockets.every((s) => existsSync(s)), child, 'qemu-storage-daemon', 20_000, () => stderr);
    return {
      pid: child.pid!,
      frontendArgs: (n) => ['--proto', 'blk', ...sockets.slice(0, n).flatMap((s) => ['--socket', s])],
      stop: () => stopChild(child),
    };
  },
};

export const vhba: SystemSpec = {
  name: 'vhba',
  describe() {
    return 'vhba engine (hba/engine.ts), one vhost-user-scsi controller, 1 request queue';
  },
  async start(files, sizeBytes, socketDir) {
    const socket = join(socketDir, 'vhba-hba0.sock');
    rmSync(socket, { force: true });
    const args = [VHBA_ENGINE, '--socket', socket, '--size', String(sizeBytes), ...files.flatMap((f) => ['--file', f])];
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    await waitFor(() => stdout.includes('"ready":true') && existsSync(socket), child, 'vhba engine', 60_000, () => stderr);
    return {
      pid: child.pid!,
      frontendArgs: (n) => ['--proto', 'scsi', '--socket', socket, '--luns', String(n)],
      stop: () => stopChild(child),
    };
  },
};
