// vhost-user works under TCG on this machine: the guest's RAM comes from a
// shared memfd backend (the harness's default), QEMU hands it to
// qemu-storage-daemon's vhost-user-blk export over a unix-socket chardev, and
// data the guest writes to /dev/vda lands in the daemon's file. This is the
// same memory and chardev set-up vhba's vhost-user-scsi engine relies on
// (docs/interop/vhost-user.rst: memory regions are passed as fds).
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Guest } from '../guest/qemu.ts';

const MiB = 1024 * 1024;
const DISK_BYTES = 32 * MiB;
const PATTERN_OFFSET = 5 * MiB;
const PATTERN_BYTES = 2 * MiB;

async function waitForPath(path: string, daemon: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(path)) {
    if (daemon.exitCode !== null) throw new Error(`qemu-storage-daemon exited with ${daemon.exitCode}`);
    if (Date.now() > deadline) throw new Error(`${path} did not appear within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('vhost-user under TCG: qemu-storage-daemon vhost-user-blk export', () => {
  let dir = '';
  let daemon: ChildProcess | undefined;
  let daemonLog = '';
  let guest: Guest | undefined;
  let image = '';

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'vhba-vhost-user-'));
    image = join(dir, 'disk.raw');
    const socket = join(dir, 'blk.sock');
    writeFileSync(image, '');
    truncateSync(image, DISK_BYTES);
    daemon = spawn('qemu-storage-daemon', [
      '--blockdev', `driver=file,node-name=f0,filename=${image}`,
      '--export', `type=vhost-user-blk,id=e0,node-name=f0,addr.type=unix,addr.path=${socket},writable=on`,
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    daemon.stdout?.setEncoding('utf8').on('data', (t: string) => { daemonLog += t; });
    daemon.stderr?.setEncoding('utf8').on('data', (t: string) => { daemonLog += t; });
    await waitForPath(socket, daemon, 20_000);
    guest = await Guest.boot({
      name: 'vhost-user-tcg',
      extraArgs: ['-chardev', `socket,id=c0,path=${socket}`, '-device', 'vhost-user-blk-pci,chardev=c0,num-queues=1'],
    });
    console.log(`vhost-user-tcg: boot ${guest.bootMs} ms wall, guest uptime ${guest.guestUptimeAtBoot} s; log ${guest.consoleLogPath}`);
  });

  afterAll(async () => {
    await guest?.shutdown();
    if (daemon && daemon.exitCode === null) {
      daemon.kill('SIGTERM');
      await new Promise((r) => daemon!.once('exit', r));
    }
    if (daemonLog.trim() !== '') console.log(`qemu-storage-daemon said:\n${daemonLog}`);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('the guest sees the export as /dev/vda of the right size', async () => {
    const size = await guest!.check('blockdev --getsize64 /dev/vda');
    expect(Number(size.trim())).toBe(DISK_BYTES);
  });

  it('a checksummed pattern written in the guest reads back in the guest and on the host', async () => {
    const blocks = PATTERN_BYTES / 65536;
    const skip = PATTERN_OFFSET / 65536;
    const script = [
      'set -e',
      `head -c ${PATTERN_BYTES} /dev/urandom > /tmp/pattern`,
      'sha256sum < /tmp/pattern | cut -d" " -f1 > /tmp/want',
      `dd if=/tmp/pattern of=/dev/vda bs=65536 seek=${skip} oflag=direct conv=fsync 2>/dev/null`,
      'echo 3 > /proc/sys/vm/drop_caches',
      `dd if=/dev/vda bs=65536 skip=${skip} count=${blocks} iflag=direct 2>/dev/null | sha256sum | cut -d" " -f1 > /tmp/got`,
      'echo "want=$(cat /tmp/want) got=$(cat /tmp/got)"',
    ].join('\n');
    const out = await guest!.check(script, { timeoutMs: 120_000 });
    const m = /want=([0-9a-f]{64}) got=([0-9a-f]{64})/.exec(out);
    expect(m, out).not.toBeNull();
    expect(m![2]).toBe(m![1]);

    // The daemon wrote it to its file: same bytes at the same offset.
    const onHost = readFileSync(image).subarray(PATTERN_OFFSET, PATTERN_OFFSET + PATTERN_BYTES);
    expect(createHash('sha256').update(onHost).digest('hex')).toBe(m![1]);
  });
});
