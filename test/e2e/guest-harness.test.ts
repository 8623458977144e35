// The guest harness itself: the cpio writer against GNU cpio, and script mode
// (a /test.sh appended to the initrd runs at boot, reports VHBA-EXIT:<rc> and
// powers the guest off).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildCpio, checkGuestPath } from '../guest/cpio.ts';
import { Guest } from '../guest/qemu.ts';

describe('cpio writer', () => {
  it('writes a newc archive that GNU cpio lists and extracts byte for byte', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vhba-cpio-'));
    try {
      const binary = Buffer.from([0, 1, 2, 255, 254, 10, 13]);
      const archive = buildCpio([
        { path: '/test.sh', content: 'echo hi\n' },
        { path: '/opt/vhba/data/blob.bin', content: binary, mode: 0o600 },
        { path: '/odd', content: 'x' },
      ]);
      expect(archive.length % 4).toBe(0);
      writeFileSync(join(dir, 'a.cpio'), archive);
      const list = spawnSync('cpio', ['-itv', '-F', join(dir, 'a.cpio')], { encoding: 'utf8' });
      expect(list.status, list.stderr).toBe(0);
      const names = list.stdout.trim().split('\n').map((l) => l.split(/\s+/).at(-1));
      expect(names).toEqual(['test.sh', 'opt', 'opt/vhba', 'opt/vhba/data', 'opt/vhba/data/blob.bin', 'odd']);
      expect(list.stdout).toMatch(/^-rw------- .* opt\/vhba\/data\/blob\.bin$/m);
      const out = join(dir, 'x');
      const extract = spawnSync('sh', ['-c', `mkdir ${out} && cd ${out} && cpio -id --quiet -F ../a.cpio`], { encoding: 'utf8' });
      expect(extract.status, extract.stderr).toBe(0);
      expect(readFileSync(join(out, 'opt/vhba/data/blob.bin'))).toEqual(binary);
      expect(readFileSync(join(out, 'test.sh'), 'utf8')).toBe('echo hi\n');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses paths that are relative or not normalised', () => {
    for (const bad of ['test.sh', '/a/../b', '/a//b', '/a/./b', '/dir/', '/a\0b']) {
      expect(() => checkGuestPath(bad), bad).toThrow();
    }
    expect(checkGuestPath('/etc/x')).toBe('etc/x');
  });
});

describe('script mode', () => {
  it('runs /test.sh at boot (with the fio layer appended), reports its exit code and powers off', async () => {
    const testScript = [
      'cat /opt/vhba/msg',
      'uname -r',
      'fio --name=w --filename=/tmp/fio.dat --size=1M --bs=4k --rw=write --output-format=terse --terse-version=3 | cut -d";" -f3',
      'exit 7',
    ].join('\n');
    const guest = await Guest.boot({
      name: 'guest-script-mode',
      layers: ['fio'],
      files: [
        { path: '/test.sh', content: `${testScript}\n` },
        { path: '/opt/vhba/msg', content: 'hello from the appended cpio\n' },
      ],
    });
    try {
      const result = await guest.waitForExit({ timeoutMs: 120_000 });
      console.log(`script mode: boot ${guest.bootMs} ms wall, guest uptime ${guest.guestUptimeAtBoot} s`);
      expect(result.exitCode).toBe(7);
      expect(result.output).toContain('hello from the appended cpio\n');
      expect(result.output).toMatch(/^\d+\.\d+\.\d+-\d+-amd64$/m);
      expect(result.output).toMatch(/^w$/m); // fio ran its job (terse field 3: job name)
      const exit = await Promise.race([guest.exited, new Promise((r) => setTimeout(() => r('still running'), 30_000))]);
      expect(exit).toEqual({ code: 0, signal: null });
    } finally {
      await guest.shutdown();
    }
  });
});
