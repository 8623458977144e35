// The CLI as users run it: bin/vhba spawned as a process.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

const bin = new URL('../bin/vhba', import.meta.url).pathname;
const examples = new URL('../examples', import.meta.url).pathname;

function vhba(...args: string[]) {
  const r = spawnSync(bin, args, { encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vhba-cli-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('bin/vhba usage', () => {
  it('--help prints the commands and exits 0; no command exits 2', () => {
    const help = vhba('--help');
    expect(help.code).toBe(0);
    expect(help.out).toMatch(/serve\s+serve VirtualDisk manifests/);
    expect(help.out).toMatch(/qemu-args/);
    expect(vhba().code).toBe(2);
  });

  it('subcommand help', () => {
    expect(vhba('serve', '--help')).toMatchObject({ code: 0, out: expect.stringContaining('--socket-dir <dir>') });
    expect(vhba('help', 'qemu-args')).toMatchObject({ code: 0, out: expect.stringContaining('--format lines|shell') });
    expect(vhba('help', 'nope').code).toBe(2);
  });

  it.each([
    [['frobnicate'], /unknown command "frobnicate"; commands: serve, qemu-args, csi/],
    [['serve', '--bogus'], /vhba serve: Unknown option '--bogus'/],
    [['serve', '--socket-dir', '/tmp/x'], /vhba serve: missing required flag --config/],
    [['serve', '--config', 'x'], /vhba serve: missing required flag --socket-dir/],
    [['serve', '--config', 'x', '--socket-dir', '/tmp/x', '--log-level', 'loud'], /--log-level "loud" is not allowed; allowed: fatal, error/],
    [['serve', 'extra'], /vhba serve: Unexpected argument 'extra'/],
    [['qemu-args', '--config', 'x', '--socket-dir', 's'], /missing required flag --vm/],
    [['qemu-args', '--config', 'x', '--socket-dir', 's', '--vm', 'demo', '--format', 'yaml'], /allowed: lines, shell/],
    [['qemu-args', '--config'], /--config/],
  ])('vhba %j exits 2 with a clear message', (args, message) => {
    const r = vhba(...args);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(message);
    expect(r.out).toBe('');
  });
});

describe('bin/vhba with manifests', () => {
  it('invalid manifests: every error on stderr with file, document and field; exit 2', async () => {
    const file = join(dir, 'disks.yaml');
    await writeFile(file, `apiVersion: vhba.io/v1alpha1
kind: VirtualDisk
metadata: {name: a}
spec: {vmName: demo, capacity: 64Mi, source: {file: {path: a.img}}}
---
apiVersion: vhba.io/v1alpha1
kind: VirtualDisk
metadata: {name: b}
spec: {vmName: Demo, capacity: 100, serial: "way-too-long-serial-number", source: {file: {path: b.img}}}
`);
    for (const command of ['serve', 'qemu-args']) {
      const r = vhba(command, '--config', file, '--socket-dir', join(dir, 's'), ...(command === 'qemu-args' ? ['--vm', 'demo'] : []));
      expect(r.code).toBe(2);
      expect(r.err).toContain(`${file} (document 2): spec.vmName:`);
      expect(r.err).toContain(`${file} (document 2): spec.capacity: 100 bytes is not a multiple of the logical block size 512`);
      expect(r.err).toContain(`${file} (document 2): spec.serial:`);
    }
    expect(existsSync(join(dir, 's'))).toBe(false);
  });

  it('qemu-args prints the arguments for the example VM', () => {
    const r = vhba('qemu-args', '--config', examples, '--socket-dir', '/run/vhba', '--vm', 'demo');
    expect(r.code).toBe(0);
    expect(r.out).toContain('vhost-user-scsi-pci,id=vhba-hba1,chardev=vhba-hba1,num_queues=2\n');
  });

  // Uses the real engine (hba/engine.ts): sockets appear, SIGTERM stops cleanly.
  it('serve runs the examples on the real engine until SIGTERM', async () => {
    const sockets = join(dir, 'sockets');
    const child = spawn(bin, ['serve', '--config', examples, '--socket-dir', sockets, '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    const deadline = Date.now() + 45_000;
    while (!out.includes('demo-dedicated') && Date.now() < deadline && child.exitCode === null) await new Promise((r) => setTimeout(r, 100));
    try {
      expect(out, err).toContain('default/demo-dedicated');
      expect((await stat(join(sockets, 'demo', 'hba0.sock'))).isSocket()).toBe(true);
      expect((await stat(join(sockets, 'demo', 'hba1.sock'))).isSocket()).toBe(true);
      const view = JSON.parse(await readFile(join(sockets, 'demo', 'disks.json'), 'utf8'));
      expect(view.disks).toHaveLength(6);
      expect((await stat(join(sockets, '.state', 'data', 'demo', 'system.img'))).size).toBe(256 * 2 ** 20);
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
  }, 60_000);
});
