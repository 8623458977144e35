// Tests of the small system helpers: memfd, eventfd, punchHole, zeroRange.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { native } from './index.ts';

describe('memfd', () => {
  it('maps shared memory visible through the fd', () => {
    const { fd, memory } = native.memfd('test', 8192);
    expect(memory.byteLength).toBe(8192);
    new Uint8Array(memory).set([1, 2, 3], 4096);
    const readBack = Buffer.alloc(3);
    fs.readSync(fd, readBack, 0, 3, 4096);
    expect([...readBack]).toEqual([1, 2, 3]);
    native.closeFd(fd);
  });

  it('rejects a zero size', () => {
    expect(() => native.memfd('test', 0)).toThrow(/size must be > 0/);
  });
});

describe('eventfd', () => {
  it('signals, waits and times out', async () => {
    const fd = native.eventfd();
    expect(await native.eventfdWait(fd, 10)).toBe(false);
    native.eventfdSignal(fd);
    native.eventfdSignal(fd);
    expect(await native.eventfdWait(fd, 1000)).toBe(true);
    expect(await native.eventfdWait(fd, 10)).toBe(false); // consumed
    native.closeFd(fd);
    expect(() => native.closeFd(fd)).toThrow(/EBADF|Bad file/);
  });
});

describe('punchHole / zeroRange', () => {
  function tempFile(size: number): { file: string; fd: number } {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhba-falloc-'));
    const file = path.join(dir, 'disk.img');
    fs.writeFileSync(file, Buffer.alloc(size, 0xab));
    return { file, fd: fs.openSync(file, 'r+') };
  }

  it('punchHole zeroes a range and keeps the size', async () => {
    const { file, fd } = tempFile(64 * 1024);
    await native.punchHole(fd, 4096, 8192);
    const data = fs.readFileSync(file);
    expect(data.length).toBe(64 * 1024);
    expect(data.subarray(4096, 12288).every((b) => b === 0)).toBe(true);
    expect(data[4095]).toBe(0xab);
    expect(data[12288]).toBe(0xab);
    fs.closeSync(fd);
  });

  it('zeroRange zeroes a range', async () => {
    const { file, fd } = tempFile(64 * 1024);
    await native.zeroRange(fd, 100, 1000);
    const data = fs.readFileSync(file);
    expect(data.subarray(100, 1100).every((b) => b === 0)).toBe(true);
    expect(data[99]).toBe(0xab);
    expect(data[1100]).toBe(0xab);
    fs.closeSync(fd);
  });

  it('rejects on a bad fd', async () => {
    await expect(native.punchHole(1_000_000, 0, 4096)).rejects.toThrow(/EBADF|Bad file/);
  });
});
