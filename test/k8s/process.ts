// Child processes for test servers (etcd, kube-apiserver): output to a log
// file, a graceful stop with a SIGKILL fallback, polling for readiness that
// fails fast (with the log's tail) when the process dies, and free loopback
// ports. Every process still running when Node exits is killed.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

/** Kills every live child synchronously when this Node process exits (a crashed test leaves no orphans). */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const child of live) child.kill('SIGKILL');
  });
}

/** A free TCP port on 127.0.0.1 (the kernel picks it; a race with other binders is possible but rare). */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => (port > 0 ? resolvePort(port) : reject(new Error('no port assigned'))));
    });
  });
}

/** A running child process whose stdout and stderr go to `logPath`. */
export class ServerProcess {
  readonly name: string;
  readonly logPath: string;
  readonly child: ChildProcess;
  /** Exit code or signal once the process has exited, else undefined. */
  exitStatus: string | undefined;
  private readonly exited: Promise<void>;

  /** Starts `command args`; its output is appended to `logPath`. */
  constructor(name: string, command: string, args: readonly string[], logPath: string) {
    installExitHook();
    this.name = name;
    this.logPath = logPath;
    const logFd = openSync(logPath, 'a');
    try {
      this.child = spawn(command, args, { stdio: ['ignore', logFd, logFd] });
    } finally {
      closeSync(logFd);
    }
    live.add(this.child);
    this.exited = new Promise((resolveExit) => {
      const done = (status: string): void => {
        this.exitStatus ??= status;
        live.delete(this.child);
        resolveExit();
      };
      this.child.once('exit', (code, signal) => done(signal ?? `exit code ${code}`));
      this.child.once('error', (err) => done(`spawn error: ${err.message}`));
    });
  }

  /** The last `lines` lines of the log (for error messages). */
  logTail(lines = 30): string {
    try {
      return readFileSync(this.logPath, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process has exited. */
  async stop(graceMs = 10_000): Promise<void> {
    if (this.exitStatus !== undefined) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    try {
      await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Polls `probe` every `intervalMs` until it returns true. Throws if the
   * process exits first or `timeoutMs` passes; the error carries the log tail.
   */
  async waitUntil(what: string, probe: () => Promise<boolean>, timeoutMs: number, intervalMs = 250): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let lastError = '';
    while (true) {
      if (this.exitStatus !== undefined) {
        throw new Error(`${this.name} exited (${this.exitStatus}) before ${what}; log ${this.logPath}:\n${this.logTail()}`);
      }
      try {
        if (await probe()) return;
      } catch (err) {
        lastError = (err as Error).message;
      }
      if (Date.now() >= deadline) {
        throw new Error(
          `${this.name}: no ${what} after ${timeoutMs} ms${lastError ? ` (last error: ${lastError})` : ''}; ` +
            `log ${this.logPath}:\n${this.logTail()}`,
        );
      }
      await sleep(intervalMs);
    }
  }
}
