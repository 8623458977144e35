// A real iSCSI target for tests (issue 8): tgtd (Linux SCSI target framework,
// Debian package tgt) in the foreground on 127.0.0.1:<free port>, with its own
// management socket (`-C <control port>`, /run/tgtd/socket.<port>) so several
// instances and leftovers of crashed runs never collide. One target, LUNs 1..n
// backed by sparse files in a fresh temporary directory, open to every
// initiator (ACL ALL). Needs root (tgtd, like any iSCSI target, is run as
// root here; the tests skip without it).
//
//   const t = await startTgtd({ luns: [{ sizeBytes: 8 << 20, blockSize: 4096 }] });
//   ... connect to t.portal, t.iqn, LUN t.luns[0] ...
//   await t.stop();
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** One LUN to create. */
export interface TgtdLunSpec {
  sizeBytes: number;
  /** Logical block size the LUN reports (tgtadm --blocksize); default 512. */
  blockSize?: number;
}

/** Options of startTgtd. */
export interface TgtdOptions {
  luns: TgtdLunSpec[];
  /** Target name; default a unique iqn.2026-11.io.vhba.test:<random>. */
  iqn?: string;
  /** How long to wait for the portal to accept connections; default 10 s. */
  startTimeoutMs?: number;
  /** Where the backing files' directory is made; default os.tmpdir()
   * (the bench puts it on tmpfs, /dev/shm). */
  parentDir?: string;
}

/** A running tgtd. */
export interface Tgtd {
  /** "127.0.0.1:<port>". */
  portal: string;
  port: number;
  iqn: string;
  /** The LUN numbers, in the order of options.luns (1, 2, ...; LUN 0 is tgt's controller). */
  luns: number[];
  /** The backing file of each LUN (same order). */
  backingPaths: string[];
  /** The management port given to -C. */
  controlPort: number;
  /** The tgtd process id. */
  pid: number;
  /** Shuts tgtd down cleanly (falls back to SIGKILL) and removes its files; idempotent. */
  stop(): Promise<void>;
  /** SIGKILL: the target vanishes mid-stream (connections reset); files stay until stop(). */
  kill(): Promise<void>;
}

/** True when tgtd can be run here (installed, and we are root). */
export function tgtdAvailable(): boolean {
  return process.getuid?.() === 0 && existsSync('/usr/sbin/tgtd') && existsSync('/usr/sbin/tgtadm');
}

/** A TCP port free on 127.0.0.1 right now. */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** A management port no other tgtd uses: its socket file must not exist
 * (tgtd takes 0..32767). */
function freeControlPort(): number {
  for (let i = 0; i < 100; i++) {
    const port = 10000 + Math.floor(Math.random() * 22000);
    if (!existsSync(`/run/tgtd/socket.${port}`) && !existsSync(`/var/run/tgtd/socket.${port}`)) return port;
  }
  throw new Error('no free tgtd control port');
}

function portAccepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

function exited(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/** Starts tgtd with one target and the given LUNs; resolves once the portal accepts. */
export async function startTgtd(options: TgtdOptions): Promise<Tgtd> {
  const dir = mkdtempSync(join(options.parentDir ?? tmpdir(), 'vhba-tgtd-'));
  const port = await freePort();
  const controlPort = freeControlPort();
  const iqn = options.iqn ?? `iqn.2026-11.io.vhba.test:${process.pid}-${Math.random().toString(36).slice(2, 10)}`;
  const log: string[] = [];
  const child = spawn('/usr/sbin/tgtd', ['-f', '--iscsi', `portal=127.0.0.1:${port}`, '-C', String(controlPort)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout!.on('data', (d: Buffer) => log.push(d.toString()));
  child.stderr!.on('data', (d: Buffer) => log.push(d.toString()));
  let stopped = false;
  const backingPaths: string[] = [];

  const tgtadm = async (...args: string[]): Promise<void> => {
    await run('/usr/sbin/tgtadm', ['-C', String(controlPort), '--lld', 'iscsi', ...args], { timeout: 10_000 });
  };
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    if (child.exitCode === null && child.signalCode === null) {
      // tgtd ignores SIGTERM; `--mode system --op delete --force` ends it.
      await run('/usr/sbin/tgtadm', ['-C', String(controlPort), '--mode', 'system', '--op', 'delete', '--force'], {
        timeout: 5000,
      }).catch(() => undefined);
      if (!(await exited(child, 3000))) {
        child.kill('SIGKILL');
        await exited(child, 3000);
      }
    }
    rmSync(dir, { recursive: true, force: true });
    for (const f of [`/run/tgtd/socket.${controlPort}`, `/run/tgtd/socket.${controlPort}.lock`]) rmSync(f, { force: true });
  };

  try {
    const deadline = Date.now() + (options.startTimeoutMs ?? 10_000);
    while (!(await portAccepts(port))) {
      if (child.exitCode !== null) throw new Error(`tgtd exited with ${child.exitCode}: ${log.join('')}`);
      if (Date.now() > deadline) throw new Error(`tgtd did not listen on 127.0.0.1:${port}: ${log.join('')}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    await tgtadm('--mode', 'target', '--op', 'new', '--tid', '1', '--targetname', iqn);
    const luns: number[] = [];
    for (const [i, spec] of options.luns.entries()) {
      const path = join(dir, `lun${i + 1}.img`);
      writeFileSync(path, '');
      truncateSync(path, spec.sizeBytes);
      backingPaths.push(path);
      await tgtadm('--mode', 'logicalunit', '--op', 'new', '--tid', '1', '--lun', String(i + 1), '--backing-store', path,
        '--blocksize', String(spec.blockSize ?? 512));
      luns.push(i + 1);
    }
    await tgtadm('--mode', 'target', '--op', 'bind', '--tid', '1', '--initiator-address', 'ALL');
    return {
      portal: `127.0.0.1:${port}`,
      port,
      iqn,
      luns,
      backingPaths,
      controlPort,
      pid: child.pid!,
      stop,
      async kill() {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGKILL');
          await exited(child, 3000);
        }
      },
    };
  } catch (e) {
    await stop();
    throw e;
  }
}
