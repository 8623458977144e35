// The real-guest harness: boots the test image (scripts/build-guest-image.sh)
// in qemu-system-x86_64 under TCG and talks to the shell /init serves on the
// serial console (test/guest/init.sh).
//
// Console protocol: each command is sent base64-encoded in short lines (the
// tty's canonical line limit is 4 KiB), written to a file in the guest and run
// there between two markers that carry a unique id. The markers are printed
// with printf so the command line itself never contains them; /init turns the
// tty's echo off and the kernel's console log level down to emergencies, so
// only the markers and the command's output appear between them.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, type WriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildCpio, padTo4, type CpioFile } from './cpio.ts';
import { ensureGuestImage } from './image.ts';

/** What to boot and how. */
export interface BootOptions {
  /** Kernel image; default: the built test image's. */
  readonly kernel?: string;
  /** Base initrd; default: the built test image's. */
  readonly initrd?: string;
  /** Optional image layers to append, e.g. `['fio']` (see build-guest-image.sh). */
  readonly layers?: readonly string[];
  /** Guest RAM in QEMU's syntax; also the memfd backend's size. Default `512M`. */
  readonly memory?: string;
  /** vCPUs; default 1. */
  readonly smp?: number;
  /** Further QEMU arguments (devices, or the output of `vhba qemu-args`). */
  readonly extraArgs?: readonly string[];
  /** Further kernel command-line words. */
  readonly kernelArgs?: readonly string[];
  /** Files added to the initramfs. A `/test.sh` makes the guest run it and power off. */
  readonly files?: readonly CpioFile[];
  /** How long the boot may take until the guest is ready; default 180 s. */
  readonly timeoutMs?: number;
  /** Label for the log directory. */
  readonly name?: string;
}

/** The result of one command run in the guest. */
export interface RunResult {
  /** Everything the command wrote to stdout and stderr, `\r` removed. */
  readonly output: string;
  readonly exitCode: number;
}

/** How QEMU ended. */
export interface QemuExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

const READY = /^VHBA-READY\r?$/m;
const BOOTED = /^VHBA-BOOTED uptime=([0-9.]+)/m;
const SCRIPT_EXIT = /^VHBA-EXIT:(\d+)\r?$/m;
const COMMAND_CHUNK = 2000;
const MAX_ENCODED_COMMAND = 32 * 1024;
const running = new Set<ChildProcess>();

// Never leave a QEMU behind, even when a test forgets shutdown().
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

interface Waiter {
  readonly pattern: RegExp;
  readonly from: number;
  readonly resolve: (m: RegExpExecArray) => void;
  readonly reject: (e: Error) => void;
  readonly timer: NodeJS.Timeout;
}

/** A booted QEMU guest with a shell on its serial console. */
export class Guest {
  /** The full QEMU command line (argv[0] included), for debugging. */
  readonly qemuArgs: readonly string[];
  /** Directory with console.log (and the composed initrd while running). */
  readonly logDir: string;
  /** Everything QEMU printed on the serial console (and its stderr). */
  readonly consoleLogPath: string;
  /** Resolves when QEMU exits. */
  readonly exited: Promise<QemuExit>;
  /** Wall-clock milliseconds from spawning QEMU to the guest being ready. */
  bootMs = 0;
  /** The guest's /proc/uptime when /init finished setting up, in seconds. */
  guestUptimeAtBoot = 0;

  private readonly child: ChildProcess;
  private readonly log: WriteStream;
  private readonly composedInitrd: string;
  private console = '';
  private waiters: Waiter[] = [];
  private exit: QemuExit | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private commandCount = 0;

  private constructor(args: string[], logDir: string, composedInitrd: string) {
    this.qemuArgs = args;
    this.logDir = logDir;
    this.composedInitrd = composedInitrd;
    this.consoleLogPath = join(logDir, 'console.log');
    this.log = createWriteStream(this.consoleLogPath);
    this.log.write(`# ${args.map((a) => JSON.stringify(a)).join(' ')}\n`);
    const [command, ...rest] = args;
    this.child = spawn(command ?? 'qemu-system-x86_64', rest, { stdio: ['pipe', 'pipe', 'pipe'] });
    running.add(this.child);
    this.child.stdout?.setEncoding('utf8').on('data', (text: string) => this.onOutput(text));
    this.child.stderr?.setEncoding('utf8').on('data', (text: string) => this.onOutput(text));
    this.child.stdin?.on('error', () => { /* QEMU gone; exit handling reports it */ });
    this.exited = new Promise((resolveExit) => {
      this.child.once('exit', (code, signal) => {
        running.delete(this.child);
        this.exit = { code, signal };
        this.log.end();
        rmSync(this.composedInitrd, { force: true });
        for (const w of this.waiters) {
          clearTimeout(w.timer);
          w.reject(this.failure(`QEMU exited (code ${code}, signal ${signal}) while waiting for ${w.pattern}`));
        }
        this.waiters = [];
        resolveExit(this.exit);
      });
    });
  }

  /** Boots a guest; resolves when its shell is ready (or, with `/test.sh`, when /init has set up). */
  static async boot(options: BootOptions = {}): Promise<Guest> {
    const image = options.kernel !== undefined && options.initrd !== undefined ? undefined : ensureGuestImage();
    const kernel = options.kernel ?? image?.kernel ?? '';
    const baseInitrd = options.initrd ?? image?.initrd ?? '';
    const memory = options.memory ?? '512M';
    const label = (options.name ?? 'guest').replace(/[^A-Za-z0-9_.-]/g, '_');
    mkdirSync(join(tmpdir(), 'vhba-guest'), { recursive: true });
    const logDir = mkdtempSync(join(tmpdir(), 'vhba-guest', `${label}-`));

    // Linux unpacks concatenated cpio archives, compressed or not, each
    // starting on a 4-byte boundary (init/initramfs.c).
    const parts: Buffer[] = [readFileSync(baseInitrd)];
    for (const layer of options.layers ?? []) {
      if (!/^[a-z0-9-]+$/.test(layer)) throw new Error(`bad layer name ${JSON.stringify(layer)}`);
      const layersDir = image?.layersDir ?? ensureGuestImage().layersDir;
      parts.push(readFileSync(join(layersDir, `${layer}.cpio.zst`)));
    }
    if (options.files !== undefined && options.files.length > 0) parts.push(buildCpio(options.files));
    const aligned = parts.flatMap((p) => [p, Buffer.alloc(padTo4(p.length))]);
    const composedInitrd = join(logDir, 'initrd.img');
    writeFileSync(composedInitrd, Buffer.concat(aligned));

    const extra = options.extraArgs ?? [];
    const hasMemoryBackend = extra.some((a) => a.includes('memory-backend='));
    const args = [
      'qemu-system-x86_64',
      '-machine', 'q35', '-accel', 'tcg',
      '-m', memory, '-smp', String(options.smp ?? 1),
      // vhost-user backends map guest RAM, so it must be a shared fd
      // (docs/interop/vhost-user.rst). `vhba qemu-args` brings its own.
      ...(hasMemoryBackend ? [] : [
        '-object', `memory-backend-memfd,id=mem,size=${memory},share=on`,
        '-machine', 'memory-backend=mem',
      ]),
      '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
      '-chardev', 'stdio,id=console,signal=off', '-serial', 'chardev:console',
      '-kernel', kernel, '-initrd', composedInitrd,
      '-append', ['console=ttyS0', 'panic=-1', 'loglevel=4', ...(options.kernelArgs ?? [])].join(' '),
      ...extra,
    ];
    const guest = new Guest(args, logDir, composedInitrd);
    const started = Date.now();
    const scriptMode = (options.files ?? []).some((f) => f.path === '/test.sh');
    try {
      const timeoutMs = options.timeoutMs ?? 180_000;
      const booted = await guest.waitFor(BOOTED, { timeoutMs });
      guest.guestUptimeAtBoot = Number(booted[1]);
      if (!scriptMode) await guest.waitFor(READY, { timeoutMs: Math.max(1, timeoutMs - (Date.now() - started)) });
    } catch (error) {
      await guest.kill();
      throw error;
    }
    guest.bootMs = Date.now() - started;
    return guest;
  }

  /** The console output so far (serial console and QEMU's stderr). */
  get consoleText(): string {
    return this.console;
  }

  /** True while QEMU runs. */
  get running(): boolean {
    return this.exit === undefined;
  }

  /** Waits until `pattern` matches the console output from offset `from` (default 0). */
  waitFor(pattern: RegExp, options: { timeoutMs?: number; from?: number } = {}): Promise<RegExpExecArray> {
    const from = options.from ?? 0;
    const found = execFrom(pattern, this.console, from);
    if (found) return Promise.resolve(found);
    if (this.exit !== undefined) return Promise.reject(this.failure(`QEMU has exited; ${pattern} never appeared`));
    const timeoutMs = options.timeoutMs ?? 60_000;
    return new Promise((resolveWait, rejectWait) => {
      const waiter: Waiter = {
        pattern, from, resolve: resolveWait, reject: rejectWait,
        timer: setTimeout(() => {
          this.waiters = this.waiters.filter((w) => w !== waiter);
          rejectWait(this.failure(`timed out after ${timeoutMs} ms waiting for ${pattern}`));
        }, timeoutMs),
      };
      this.waiters.push(waiter);
    });
  }

  /** Runs `command` with the guest's sh; commands run one at a time, stdin is /dev/null. */
  run(command: string, options: { timeoutMs?: number } = {}): Promise<RunResult> {
    const next = this.queue.then(() => this.runNow(command, options.timeoutMs ?? 60_000));
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** Like run(), but throws unless the command exits 0; returns its output. */
  async check(command: string, options: { timeoutMs?: number } = {}): Promise<string> {
    const result = await this.run(command, options);
    if (result.exitCode !== 0) {
      throw new Error(`guest command failed (exit ${result.exitCode}): ${command}\n${result.output}`);
    }
    return result.output;
  }

  /** Polls in the guest (10 Hz) until `condition` (a sh condition) holds;
   * resolves false if `seconds` pass first. */
  async pollUntil(condition: string, seconds: number): Promise<boolean> {
    const out = await this.run(`n=0; until ${condition}; do n=$((n+1)); [ $n -ge ${seconds * 10} ] && { echo TIMEOUT; exit 1; }; sleep 0.1; done; echo READY`, { timeoutMs: (seconds + 60) * 1000 });
    return out.output.includes('READY');
  }

  /** In script mode (a `/test.sh`), waits for it to finish; returns its exit code and output. */
  async waitForExit(options: { timeoutMs?: number } = {}): Promise<RunResult> {
    const booted = BOOTED.exec(this.console);
    const start = booted ? booted.index + booted[0].length : 0;
    const done = await this.waitFor(SCRIPT_EXIT, { timeoutMs: options.timeoutMs ?? 300_000, from: start });
    const output = this.console.slice(start, done.index).replace(/^[^\n]*\n/, '').replaceAll('\r', '');
    await Promise.race([this.exited, delay(30_000)]);
    return { output, exitCode: Number(done[1]) };
  }

  /** Powers the guest off (then kills QEMU after `graceMs`); safe to call more than once. */
  async shutdown(graceMs = 10_000): Promise<QemuExit> {
    if (this.exit !== undefined) return this.exit;
    // Interrupt whatever runs, then power off without the init system.
    this.write('\x03\npoweroff -f\n');
    const ended = await Promise.race([this.exited, delay(graceMs).then(() => undefined)]);
    if (ended !== undefined) return ended;
    return this.kill();
  }

  /** Kills QEMU at once (SIGTERM, then SIGKILL). */
  async kill(): Promise<QemuExit> {
    if (this.exit !== undefined) return this.exit;
    this.child.kill('SIGTERM');
    const ended = await Promise.race([this.exited, delay(3_000).then(() => undefined)]);
    if (ended !== undefined) return ended;
    this.child.kill('SIGKILL');
    return this.exited;
  }

  private async runNow(command: string, timeoutMs: number): Promise<RunResult> {
    if (this.exit !== undefined) throw this.failure('QEMU has exited');
    const id = `${process.pid.toString(36)}${(this.commandCount++).toString(36)}${randomBytes(4).toString('hex')}`;
    const file = `/tmp/.vhba-cmd-${id}`;
    const encoded = Buffer.from(command, 'utf8').toString('base64');
    if (encoded.length > MAX_ENCODED_COMMAND) {
      // The serial line has no flow control past the tty's buffers.
      throw new Error(`guest command too long (${command.length} bytes); put large scripts in BootOptions.files`);
    }
    let text = `rm -f ${file}.b64\n`;
    for (let i = 0; i < encoded.length; i += COMMAND_CHUNK) {
      text += `echo ${encoded.slice(i, i + COMMAND_CHUNK)} >>${file}.b64\n`;
    }
    // The markers are assembled by printf, so this line never contains them.
    text += `base64 -d ${file}.b64 >${file}; printf '__VHBA_B_%s__\\n' ${id}; /bin/sh ${file} </dev/null 2>&1; printf '__VHBA_E_%s_%d__\\n' ${id} $?; rm -f ${file} ${file}.b64\n`;
    const from = this.console.length;
    this.write(text);
    const begin = new RegExp(`__VHBA_B_${id}__\\r?\\n`);
    const end = new RegExp(`__VHBA_E_${id}_(\\d+)__`);
    try {
      const started = await this.waitFor(begin, { timeoutMs, from });
      const finished = await this.waitFor(end, { timeoutMs, from: started.index + started[0].length });
      const output = this.console.slice(started.index + started[0].length, finished.index).replaceAll('\r', '');
      return { output, exitCode: Number(finished[1]) };
    } catch (error) {
      if (this.exit === undefined) this.write('\x03\n'); // let the next command start
      throw new Error(`guest command failed: ${command.slice(0, 200)}\n${(error as Error).message}`, { cause: error });
    }
  }

  private write(text: string): void {
    if (this.exit === undefined) this.child.stdin?.write(text);
  }

  private onOutput(text: string): void {
    this.console += text;
    this.log.write(text);
    for (const w of [...this.waiters]) {
      const m = execFrom(w.pattern, this.console, w.from);
      if (m) {
        clearTimeout(w.timer);
        this.waiters = this.waiters.filter((x) => x !== w);
        w.resolve(m);
      }
    }
  }

  private failure(message: string): Error {
    const tail = this.console.slice(-3000);
    return new Error(`${message}\nconsole log: ${this.consoleLogPath}\n--- console tail ---\n${tail}`);
  }
}

/** Boots, runs `body`, and always shuts the guest down. */
export async function withGuest<T>(options: BootOptions, body: (guest: Guest) => Promise<T>): Promise<T> {
  const guest = await Guest.boot(options);
  try {
    return await body(guest);
  } finally {
    await guest.shutdown();
  }
}

function execFrom(pattern: RegExp, text: string, from: number): RegExpExecArray | null {
  const flags = pattern.flags.includes('g') ? pattern.flags : `${pattern.flags}g`;
  const re = new RegExp(pattern.source, flags);
  re.lastIndex = from;
  return re.exec(text);
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}
