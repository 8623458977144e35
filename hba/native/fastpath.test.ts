// The native READ/WRITE/SYNCHRONIZE CACHE fast path (hba/native/src/
// scsi_fastpath.cc) driven through the mock virtio driver on a request queue
// (queue 2), with real files behind the LUNs.
import { closeSync, constants as fsConstants, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { NativeLunConfig } from './index.ts';
import { type Rig, settle, setupRig, waitFor } from './device-harness.ts';
import { cdb10, cdb16 } from '../scsi/testing.ts';

const REQUEST_QUEUE = 2;
const REQ_SIZE = 51; // virtio_scsi_cmd_req with cdb_size 32 (virtio 1.2 §5.6.6.1)
const RESP_SIZE = 108; // virtio_scsi_cmd_resp with sense_size 96
const BLOCK = 512;
const BLOCKS = 2048; // 1 MiB images

/** A virtio_scsi_cmd_req for target/lun (flat addressing, as Linux sends it). */
function request(target: number, lun: number, cdb: Buffer): Buffer {
  const req = Buffer.alloc(REQ_SIZE);
  req[0] = 1;
  req[1] = target;
  req.writeUInt16BE(0x4000 | lun, 2);
  req.writeBigUInt64LE(7n, 8);
  cdb.copy(req, 19);
  return req;
}


const READ10 = 0x28, READ16 = 0x88, WRITE10 = 0x2a, WRITE16 = 0x8a, SYNC10 = 0x35, INQUIRY = 0x12;
const FUA = 0x08;

interface Response {
  senseLength: number;
  resid: number;
  status: number;
  response: number;
  key: number;
  asc: number;
  ascq: number;
  data: Buffer;
}

function parseResponse(buf: Buffer): Response {
  return {
    senseLength: buf.readUInt32LE(0),
    resid: buf.readUInt32LE(4),
    status: buf[10]!,
    response: buf[11]!,
    key: buf[12 + 2]! & 0x0f,
    asc: buf[12 + 12]!,
    ascq: buf[12 + 13]!,
    data: buf.subarray(RESP_SIZE),
  };
}

let dir: string;
let rig: Rig | undefined;
const openFds: number[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'vhba-fastpath-'));
});
afterEach(() => {
  rig?.close();
  rig = undefined;
  for (const fd of openFds.splice(0)) closeSync(fd);
  rmSync(dir, { recursive: true, force: true });
});

/** An image file filled with a per-block pattern; returns its path. */
function image(name: string, fill = (i: number) => (i * 7) & 0xff): string {
  const path = join(dir, name);
  const data = Buffer.alloc(BLOCK * BLOCKS);
  for (let i = 0; i < data.length; i++) data[i] = fill(i);
  writeFileSync(path, data);
  return path;
}

function openFile(path: string, flags: number): number {
  const fd = openSync(path, flags);
  openFds.push(fd);
  return fd;
}

function lunConfig(path: string, overrides: Partial<NativeLunConfig> = {}): NativeLunConfig {
  return {
    fd: openFile(path, fsConstants.O_RDWR),
    dsyncFd: openFile(path, fsConstants.O_RDWR | fsConstants.O_DSYNC),
    blockSize: BLOCK,
    blockCount: BLOCKS,
    maxTransferBlocks: 16384,
    readOnly: false,
    writeCacheEnabled: true,
    eligible: true,
    ...overrides,
  };
}

async function requestRig(memorySize = 4 << 20): Promise<Rig> {
  const r = await setupRig({ numQueues: 3, queueSize: 64, unconfigured: true, memorySize, maxChainBytes: 8 << 20 });
  await r.queue.configure(r.device, REQUEST_QUEUE);
  return r;
}

/** Submits one command and waits for its used element (it must complete natively). */
async function submit(r: Rig, req: Buffer, opts: { dataOut?: Buffer; dataIn?: number } = {}): Promise<Response & { len: number }> {
  const chainsBefore = r.chains.length;
  const segments = [{ data: req }];
  if (opts.dataOut) segments.push({ data: opts.dataOut });
  const head = r.queue.addChain([...segments, { writableLength: RESP_SIZE + (opts.dataIn ?? 0) }]);
  r.queue.publishAndKick();
  let used: { head: number; len: number; data: Buffer }[] = [];
  await waitFor(() => (used = r.queue.reclaim()).length > 0 || r.chains.length > chainsBefore, 3000, 'completion');
  expect(r.chains.length).toBe(chainsBefore); // nothing reached JS
  expect(used).toHaveLength(1);
  expect(used[0]!.head).toBe(head);
  return { ...parseResponse(used[0]!.data), len: used[0]!.len };
}

describe('native fast path: READ / WRITE / SYNCHRONIZE CACHE', () => {
  it('writes guest data to the file and reads it back without JS, counting both', async () => {
    rig = await requestRig();
    const path = image('a.img');
    rig.device.setLun(0, 3, lunConfig(path));
    const payload = Buffer.alloc(4 * BLOCK);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 13 + 5) & 0xff;

    const w = await submit(rig, request(0, 3, cdb10(WRITE10, 8, 4)), { dataOut: payload });
    expect(w).toMatchObject({ status: 0, response: 0, senseLength: 0, resid: 0, len: RESP_SIZE });
    expect(readFileSync(path).subarray(8 * BLOCK, 12 * BLOCK)).toEqual(payload);

    const r = await submit(rig, request(0, 3, cdb16(READ16, 8n, 4)), { dataIn: 4 * BLOCK + 100 });
    expect(r).toMatchObject({ status: 0, response: 0, senseLength: 0, resid: 100, len: RESP_SIZE + 4 * BLOCK });
    expect(r.data.subarray(0, 4 * BLOCK)).toEqual(payload);

    expect(rig.device.lunCounters(0, 3)).toEqual({ reads: 1, writes: 1, bytesRead: 2048, bytesWritten: 2048, flushes: 0, errors: 0 });
    expect(rig.device.lunCounters(0, 4)).toBeUndefined();
  });

  it('reads data spread over many guest buffers (indirect table)', async () => {
    rig = await requestRig();
    const path = image('b.img');
    rig.device.setLun(1, 0, lunConfig(path));
    const head = rig.queue.addChain(
      [{ data: request(1, 0, cdb10(READ10, 1, 3)) }, { writableLength: 100 }, { writableLength: 8 + 700 }, { writableLength: 836 }],
      { indirect: true },
    );
    rig.queue.publishAndKick();
    await waitFor(() => rig!.queue.usedIdx() === 1);
    const [used] = rig.queue.reclaim();
    expect(used!.head).toBe(head);
    expect(used!.len).toBe(RESP_SIZE + 3 * BLOCK);
    expect(parseResponse(used!.data).status).toBe(0);
    expect(used!.data.subarray(RESP_SIZE)).toEqual(readFileSync(path).subarray(BLOCK, 4 * BLOCK));
  });

  it('sends FUA writes, and every write while WCE=0, through the O_DSYNC descriptor', async () => {
    rig = await requestRig();
    // The O_DSYNC descriptor deliberately names another file, so the test
    // sees which descriptor each write went to.
    const plain = image('plain.img', () => 0);
    const dsync = image('dsync.img', () => 0);
    rig.device.setLun(0, 0, { ...lunConfig(plain), dsyncFd: openFile(dsync, fsConstants.O_RDWR | fsConstants.O_DSYNC) });
    const ones = Buffer.alloc(BLOCK, 1);
    const twos = Buffer.alloc(BLOCK, 2);
    const threes = Buffer.alloc(BLOCK, 3);
    expect((await submit(rig, request(0, 0, cdb10(WRITE10, 0, 1)), { dataOut: ones })).status).toBe(0);
    expect((await submit(rig, request(0, 0, cdb16(WRITE16, 1n, 1, FUA)), { dataOut: twos })).status).toBe(0);
    rig.device.updateLun(0, 0, { writeCacheEnabled: false });
    expect((await submit(rig, request(0, 0, cdb10(WRITE10, 2, 1)), { dataOut: threes })).status).toBe(0);
    const p = readFileSync(plain);
    const d = readFileSync(dsync);
    expect(p.subarray(0, BLOCK)).toEqual(ones);
    expect(p.subarray(BLOCK, 3 * BLOCK)).toEqual(Buffer.alloc(2 * BLOCK));
    expect(d.subarray(BLOCK, 2 * BLOCK)).toEqual(twos);
    expect(d.subarray(2 * BLOCK, 3 * BLOCK)).toEqual(threes);
  });

  it('SYNCHRONIZE CACHE flushes; its LBA range is checked', async () => {
    rig = await requestRig();
    rig.device.setLun(0, 0, lunConfig(image('s.img')));
    expect(await submit(rig, request(0, 0, cdb10(SYNC10, 0, 0)))).toMatchObject({ status: 0, senseLength: 0, len: RESP_SIZE });
    expect(rig.device.lunCounters(0, 0)!.flushes).toBe(1);
    const bad = await submit(rig, request(0, 0, cdb10(SYNC10, BLOCKS, 1)));
    expect(bad).toMatchObject({ status: 2, senseLength: 18, key: 0x05, asc: 0x21, ascq: 0 });
  });

  it('refuses writes to a read-only LUN with DATA PROTECT / WRITE PROTECTED', async () => {
    rig = await requestRig();
    const path = image('ro.img');
    const before = readFileSync(path);
    rig.device.setLun(0, 0, lunConfig(path, { readOnly: true, dsyncFd: -1, fd: openFile(path, fsConstants.O_RDONLY) }));
    const w = await submit(rig, request(0, 0, cdb10(WRITE10, 0, 1)), { dataOut: Buffer.alloc(BLOCK, 9) });
    expect(w).toMatchObject({ status: 2, response: 0, senseLength: 18, key: 0x07, asc: 0x27, ascq: 0, resid: 0 });
    expect(readFileSync(path)).toEqual(before);
    expect((await submit(rig, request(0, 0, cdb10(READ10, 0, 1)), { dataIn: BLOCK })).status).toBe(0);
    expect(rig.device.lunCounters(0, 0)).toMatchObject({ reads: 1, writes: 0 });
  });

  it('answers LBA out of range, without wrapping at 2^64', async () => {
    rig = await requestRig();
    rig.device.setLun(0, 0, lunConfig(image('r.img')));
    for (const [lba, blocks] of [[BigInt(BLOCKS - 1), 2], [BigInt(BLOCKS), 1], [0xffff_ffff_ffff_ffffn, 2], [0xffff_ffff_ffff_fff0n, 0x20]] as const) {
      const r = await submit(rig, request(0, 0, cdb16(READ16, lba, blocks)), { dataIn: blocks * BLOCK });
      expect(r).toMatchObject({ status: 2, senseLength: 18, key: 0x05, asc: 0x21, ascq: 0, resid: blocks * BLOCK, len: RESP_SIZE });
    }
    // The last block is in range.
    expect((await submit(rig, request(0, 0, cdb16(READ16, BigInt(BLOCKS - 1), 1)), { dataIn: BLOCK })).status).toBe(0);
  });

  it('follows capacity changes (resize)', async () => {
    rig = await requestRig();
    const path = image('grow.img');
    rig.device.setLun(0, 0, lunConfig(path, { blockCount: BLOCKS / 2 }));
    expect((await submit(rig, request(0, 0, cdb10(READ10, BLOCKS / 2, 1)), { dataIn: BLOCK })).asc).toBe(0x21);
    rig.device.updateLun(0, 0, { blockCount: BigInt(BLOCKS) });
    expect((await submit(rig, request(0, 0, cdb10(READ10, BLOCKS / 2, 1)), { dataIn: BLOCK })).status).toBe(0);
  });
});

describe('native fast path: what goes to JS', () => {
  async function expectDeferred(r: Rig, req: Buffer, opts: { dataOut?: Buffer; dataIn?: number } = {}): Promise<void> {
    const before = r.chains.length;
    const usedBefore = r.queue.usedIdx();
    const segments = [{ data: req }];
    if (opts.dataOut) segments.push({ data: opts.dataOut });
    const head = r.queue.addChain([...segments, { writableLength: RESP_SIZE + (opts.dataIn ?? 0) }]);
    r.queue.publishAndKick();
    await waitFor(() => r.chains.length === before + 1, 3000, 'chain for JS');
    const chain = r.chains[before]!;
    expect(chain.head).toBe(head);
    expect(chain.queue).toBe(REQUEST_QUEUE);
    expect(chain.readable).toEqual(Buffer.concat([req, opts.dataOut ?? Buffer.alloc(0)]));
    expect(r.queue.usedIdx()).toBe(usedBefore);
    r.device.complete(REQUEST_QUEUE, head, Buffer.alloc(RESP_SIZE));
    r.queue.reclaim();
  }

  it('defers ineligible LUNs (a unit attention pending), unknown LUNs and other commands', async () => {
    rig = await requestRig();
    rig.device.setLun(0, 0, lunConfig(image('d.img'), { eligible: false }));
    await expectDeferred(rig, request(0, 0, cdb10(READ10, 0, 1)), { dataIn: BLOCK });
    rig.device.updateLun(0, 0, { eligible: true });
    expect((await submit(rig, request(0, 0, cdb10(READ10, 0, 1)), { dataIn: BLOCK })).status).toBe(0);
    await expectDeferred(rig, request(0, 1, cdb10(READ10, 0, 1)), { dataIn: BLOCK }); // unknown LUN
    await expectDeferred(rig, request(2, 0, cdb10(READ10, 0, 1)), { dataIn: BLOCK }); // unknown target
    await expectDeferred(rig, request(0, 0, Buffer.from([INQUIRY, 0, 0, 0, 36, 0])), { dataIn: 36 });
    await expectDeferred(rig, request(0, 0, cdb10(READ10, 0, 1, 0x20)), { dataIn: BLOCK }); // RDPROTECT: INVALID FIELD from JS
    await expectDeferred(rig, request(0, 0, cdb10(READ10, 0, 0)), { dataIn: 0 }); // zero-length transfer
    await expectDeferred(rig, request(0, 0, cdb10(READ10, 0, 2)), { dataIn: BLOCK }); // buffer smaller than the transfer
    await expectDeferred(rig, request(0, 0, cdb10(WRITE10, 0, 2)), { dataOut: Buffer.alloc(BLOCK) });
    const badLun = request(0, 0, cdb10(READ10, 0, 1));
    badLun[4] = 1; // bytes 4-7 must be zero
    await expectDeferred(rig, badLun, { dataIn: BLOCK });
    expect(rig.device.lunCounters(0, 0)).toMatchObject({ reads: 1, writes: 0 });
  });

  it('defers chains on the control and event queues even for a registered LUN', async () => {
    rig = await setupRig({ numQueues: 3, queueSize: 16 });
    rig.device.setLun(0, 0, lunConfig(image('q0.img')));
    const head = rig.queue.addChain([{ data: request(0, 0, cdb10(READ10, 0, 1)) }, { writableLength: RESP_SIZE + BLOCK }]);
    rig.queue.publishAndKick();
    await waitFor(() => rig!.chains.length === 1);
    expect(rig.chains[0]).toMatchObject({ queue: 0, head });
    expect(rig.device.lunCounters(0, 0)!.reads).toBe(0);
  });

  it('refuses a second registration and updates of unknown LUNs', async () => {
    rig = await requestRig();
    const path = image('x.img');
    rig.device.setLun(0, 0, lunConfig(path));
    expect(() => rig!.device.setLun(0, 0, lunConfig(path))).toThrow(/already registered/);
    expect(() => rig!.device.updateLun(0, 1, { eligible: true })).toThrow(/not registered/);
    expect(() => rig!.device.setLun(0, 1, lunConfig(path, { dsyncFd: -1 }))).toThrow(/dsyncFd/);
    expect(() => rig!.device.setLun(0, 1, lunConfig(path, { blockSize: 1024 }))).toThrow(/blockSize/);
    expect(await rig.device.removeLun(0, 7)).toBeUndefined();
  });
});

describe('native fast path: removal', () => {
  it('removeLun resolves only after the native commands holding the LUN finished; later ones go to JS', async () => {
    const chunk = 1 << 20;
    const count = 16;
    rig = await requestRig(count * (chunk + 4096) + (2 << 20));
    const path = join(dir, 'big.img');
    writeFileSync(path, Buffer.alloc(chunk * 4, 0x5a));
    rig.device.setLun(0, 0, lunConfig(path, { blockCount: (chunk * 4) / BLOCK }));
    const heads: number[] = [];
    for (let i = 0; i < count; i++) {
      heads.push(rig.queue.addChain([{ data: request(0, 0, cdb10(READ10, (i % 4) * (chunk / BLOCK), chunk / BLOCK)) }, { writableLength: RESP_SIZE + chunk }]));
    }
    rig.queue.publishAndKick();
    await waitFor(() => rig!.device.queueState(REQUEST_QUEUE).lastAvail === count, 3000, 'chains popped');
    const counters = await rig.device.removeLun(0, 0);
    expect(counters).toBeDefined();
    // Every command that ran natively completed before the promise resolved:
    // no native completion can appear after it.
    const nativeDone = counters!.reads;
    expect(nativeDone).toBeGreaterThanOrEqual(1); // the removal met a command in flight
    await waitFor(() => rig!.queue.usedIdx() + rig!.chains.length >= count, 3000, 'all chains accounted for');
    await settle(50);
    expect(rig.queue.usedIdx()).toBe(nativeDone);
    expect(rig.chains.length).toBe(count - nativeDone);
    const used = rig.queue.reclaim();
    for (const u of used) {
      expect(parseResponse(u.data).status).toBe(0);
      expect(u.data.subarray(RESP_SIZE, RESP_SIZE + 16)).toEqual(Buffer.alloc(16, 0x5a));
    }
    expect(rig.device.lunCounters(0, 0)).toBeUndefined();
  });

  it('drainLun waits for in-flight commands of an ineligible LUN and keeps it registered', async () => {
    rig = await requestRig();
    rig.device.setLun(0, 0, lunConfig(image('q.img')));
    rig.device.updateLun(0, 0, { eligible: false });
    await rig.device.drainLun(0, 0);
    await rig.device.drainLun(0, 9); // absent: resolves
    expect(rig.device.lunCounters(0, 0)).toMatchObject({ reads: 0 });
  });
});
