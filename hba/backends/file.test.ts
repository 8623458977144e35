import { constants as fsConstants } from 'node:fs';
import { mkdtemp, readFile, readlink, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { open, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { native } from '../native/index.ts';
import { LogicalUnit } from '../scsi/logical-unit.ts';
import { cdb10, run, testParams } from '../scsi/testing.ts';
import { Status } from '../scsi/types.ts';
import { FileBackend } from './file.ts';

const MiB = 1 << 20;
let dir: string;

/** FileHandle is not exported as a value; take its prototype from an open handle. */
async function fileHandlePrototype(): Promise<FileHandle> {
  const handle = await open('/proc/self/stat', 'r');
  await handle.close();
  return Object.getPrototypeOf(handle) as FileHandle;
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vhba-file-backend-'));
});
afterEach(async () => {
  vi.restoreAllMocks();
  await rm(dir, { recursive: true, force: true });
});

/** Open flags of every fd of this process that points at `path` (from /proc/self/fdinfo). */
async function openFlags(path: string): Promise<Map<number, number>> {
  const result = new Map<number, number>();
  for (const name of await readdir('/proc/self/fd')) {
    const target = await readlink(`/proc/self/fd/${name}`).catch(() => '');
    if (target !== path) continue;
    const info = await readFile(`/proc/self/fdinfo/${name}`, 'utf8').catch(() => '');
    const flags = /flags:\s*([0-7]+)/.exec(info)?.[1];
    if (flags) result.set(Number(name), parseInt(flags, 8));
  }
  return result;
}

describe('FileBackend.open', () => {
  it('creates a sparse file of the requested size', async () => {
    const path = join(dir, 'disk.img');
    const b = await FileBackend.open(path, { sizeBytes: 64 * MiB, create: true });
    const st = await stat(path);
    expect(st.size).toBe(64 * MiB);
    expect(st.blocks * 512).toBeLessThan(MiB); // sparse
    expect((st.mode & 0o777).toString(8)).toBe('600');
    expect(b.size()).toBe(64 * MiB);
    await b.close();
  });

  it('grows an existing file but never shrinks it', async () => {
    const path = join(dir, 'disk.img');
    await writeFile(path, Buffer.alloc(2 * MiB, 7));
    const grown = await FileBackend.open(path, { sizeBytes: 4 * MiB });
    expect((await stat(path)).size).toBe(4 * MiB);
    expect((await grown.read(0, 4)).toString('hex')).toBe('07070707');
    await grown.close();
    const smaller = await FileBackend.open(path, { sizeBytes: MiB });
    expect((await stat(path)).size).toBe(4 * MiB);
    expect(smaller.size()).toBe(MiB);
    await smaller.close();
  });

  it('fails without create when the file is missing, and refuses directories', async () => {
    await expect(FileBackend.open(join(dir, 'missing.img'), { sizeBytes: MiB })).rejects.toThrow(/ENOENT/);
    await expect(FileBackend.open(dir)).rejects.toThrow();
  });

  it('opens a second descriptor with O_DSYNC for FUA writes', async () => {
    const path = join(dir, 'disk.img');
    const b = await FileBackend.open(path, { sizeBytes: MiB, create: true });
    const flags = [...(await openFlags(path)).values()];
    expect(flags).toHaveLength(2);
    expect(flags.filter((f) => (f & fsConstants.O_DSYNC) === fsConstants.O_DSYNC)).toHaveLength(1);
    await b.close();
    expect((await openFlags(path)).size).toBe(0);
  });
});

describe('FileBackend I/O', () => {
  it('round-trips data and reads holes as zeros', async () => {
    const b = await FileBackend.open(join(dir, 'd.img'), { sizeBytes: 8 * MiB, create: true });
    const data = Buffer.alloc(8192, 0xab);
    await b.write(4096, data, false);
    expect(await b.read(4096, 8192)).toEqual(data);
    expect((await b.read(MiB, 4096)).every((x) => x === 0)).toBe(true);
    await b.close();
  });

  it('FUA writes go through the O_DSYNC descriptor, plain writes do not', async () => {
    const path = join(dir, 'd.img');
    const b = await FileBackend.open(path, { sizeBytes: MiB, create: true });
    const flags = await openFlags(path);
    const used: number[] = [];
    const proto = await fileHandlePrototype();
    const original = proto.write;
    vi.spyOn(proto, 'write').mockImplementation(function (this: FileHandle, ...args: Parameters<FileHandle['write']>) {
      used.push(this.fd);
      return (original as (...a: unknown[]) => ReturnType<FileHandle['write']>).apply(this, args);
    } as FileHandle['write']);
    await b.write(0, Buffer.alloc(512, 1), true);
    await b.write(512, Buffer.alloc(512, 2), false);
    const dsync = (fd: number) => (flags.get(fd)! & fsConstants.O_DSYNC) === fsConstants.O_DSYNC;
    expect(used.map(dsync)).toEqual([true, false]);
    await b.close();
  });

  it('flush is fdatasync', async () => {
    const b = await FileBackend.open(join(dir, 'd.img'), { sizeBytes: MiB, create: true });
    const spy = vi.spyOn(await fileHandlePrototype(), 'datasync');
    await b.flush();
    expect(spy).toHaveBeenCalledTimes(1);
    await b.close();
  });

  it('rejects ranges outside the capacity', async () => {
    const b = await FileBackend.open(join(dir, 'd.img'), { sizeBytes: MiB, create: true });
    await expect(b.read(MiB - 512, 1024)).rejects.toThrow(RangeError);
    await expect(b.write(MiB, Buffer.alloc(1), false)).rejects.toThrow(RangeError);
    await expect(b.read(-1, 1)).rejects.toThrow(RangeError);
    await b.close();
  });

  it('writeZeroes zeroes a range', async () => {
    const b = await FileBackend.open(join(dir, 'd.img'), { sizeBytes: 4 * MiB, create: true });
    await b.write(0, Buffer.alloc(3 * MiB, 0xff), false);
    await b.writeZeroes(4096, 2 * MiB + 512);
    const back = await b.read(0, 3 * MiB);
    expect(back.subarray(0, 4096).every((x) => x === 0xff)).toBe(true);
    expect(back.subarray(4096, 4096 + 2 * MiB + 512).every((x) => x === 0)).toBe(true);
    expect(back.subarray(4096 + 2 * MiB + 512).every((x) => x === 0xff)).toBe(true);
    await b.close();
  });

  it('discard punches a hole (needs the native addon)', async () => {
    const path = join(dir, 'd.img');
    const b = await FileBackend.open(path, { sizeBytes: 4 * MiB, create: true });
    await b.write(0, Buffer.alloc(2 * MiB, 0x11), false);
    await b.flush();
    expect(typeof native.punchHole).toBe('function');
    const before = (await stat(path)).blocks;
    await b.discard(0, MiB);
    expect((await b.read(0, MiB)).every((x) => x === 0)).toBe(true);
    expect((await b.read(MiB, 16)).every((x) => x === 0x11)).toBe(true);
    expect((await stat(path)).blocks).toBeLessThan(before);
    expect((await stat(path)).size).toBe(4 * MiB);
    await b.close();
  });

  it('resize grows and shrinks the file', async () => {
    const path = join(dir, 'd.img');
    const b = await FileBackend.open(path, { sizeBytes: MiB, create: true });
    await b.resize(3 * MiB);
    expect([(await stat(path)).size, b.size()]).toEqual([3 * MiB, 3 * MiB]);
    await b.resize(MiB / 2);
    expect([(await stat(path)).size, b.size()]).toEqual([MiB / 2, MiB / 2]);
    await b.close();
  });

  it('closed: operations fail, close is idempotent', async () => {
    const b = await FileBackend.open(join(dir, 'd.img'), { sizeBytes: MiB, create: true });
    await b.close();
    await b.close();
    await expect(b.read(0, 1)).rejects.toThrow(/closed/);
    await expect(b.flush()).rejects.toThrow(/closed/);
  });
});

describe('read-only FileBackend', () => {
  it('refuses writes, has no O_DSYNC descriptor, and reads past a short file as zeros', async () => {
    const path = join(dir, 'ro.img');
    await writeFile(path, Buffer.alloc(4096, 0x33));
    const b = await FileBackend.open(path, { sizeBytes: MiB, readOnly: true });
    expect((await stat(path)).size).toBe(4096);
    expect(b.size()).toBe(MiB);
    const back = await b.read(0, 8192);
    expect(back.subarray(0, 4096).every((x) => x === 0x33)).toBe(true);
    expect(back.subarray(4096).every((x) => x === 0)).toBe(true);
    await expect(b.write(0, Buffer.alloc(512), false)).rejects.toThrow(/read-only/);
    await expect(b.resize(2 * MiB)).rejects.toThrow(/read-only/);
    expect((await openFlags(path)).size).toBe(1);
    await b.close();
  });
});

describe('LogicalUnit over FileBackend', () => {
  it('writes, synchronizes and reads back through SCSI commands', async () => {
    const path = join(dir, 'lu.img');
    const backend = await FileBackend.open(path, { sizeBytes: 8 * MiB, create: true });
    const lu = new LogicalUnit({ ...testParams, logicalBlockSize: 4096, physicalBlockSize: 4096 }, backend);
    await run(lu, [0, 0, 0, 0, 0, 0]);
    const data = Buffer.alloc(3 * 4096);
    for (let i = 0; i < data.length; i++) data[i] = (i * 31) & 0xff;
    expect((await run(lu, cdb10(0x2a, 5, 3, 0x08), { dataOut: data })).status).toBe(Status.GOOD);
    expect((await run(lu, cdb10(0x35, 0, 0))).status).toBe(Status.GOOD);
    expect((await run(lu, cdb10(0x28, 5, 3))).dataIn).toEqual(data);
    // UNMAP the middle block: a hole reading as zeros
    const list = Buffer.alloc(24);
    list.writeUInt16BE(22, 0);
    list.writeUInt16BE(16, 2);
    list.writeBigUInt64BE(6n, 8);
    list.writeUInt32BE(1, 16);
    expect((await run(lu, [0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], { dataOut: list })).status).toBe(Status.GOOD);
    data.fill(0, 4096, 8192);
    expect((await run(lu, cdb10(0x28, 5, 3))).dataIn).toEqual(data);
    await lu.close();
    const onDisk = await readFile(path);
    expect(onDisk.subarray(5 * 4096, 8 * 4096)).toEqual(data);
  });
});
