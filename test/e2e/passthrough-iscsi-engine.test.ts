// The engine's lifecycle of a passthrough LUN (issue 8) against a real iSCSI
// target (tgtd on loopback, test/passthrough/tgtd.ts), the parts
// test/e2e/passthrough-iscsi.test.ts (device checks: identity bytes, PR,
// policy, target death) does not cover: the LUN is served by the native fast
// path (the TypeScript path sees none of its READs), attach raises the
// hotplug event, flush is SYNCHRONIZE CACHE at the target, resize is refused,
// detach with native I/O in flight completes every command and closes the
// session, and re-attach finds the same device again.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine, EngineError, type VhbaEngineInstance } from '../../hba/engine.ts';
import type { LunSpec } from '../../hba/engine-api.ts';
import { EVENT_INFO_SIZE, EVENT_QUEUE, FIRST_REQUEST_QUEUE, VirtioScsiFeature } from '../../hba/virtio-scsi/config.ts';
import { EventType, ResetReason } from '../../hba/virtio-scsi/events.ts';
import { Response } from '../../hba/virtio-scsi/framing.ts';
import { TestFrontend } from '../../hba/vhost-user/test-frontend.ts';
import { startTgtd, tgtdAvailable, type Tgtd } from '../passthrough/tgtd.ts';

const GOOD = 0;
const BLOCK = 4096;
const CONTROLLER = 'pt-engine';

function read16(lba: number, blocks: number): number[] {
  const c = Buffer.alloc(16);
  c[0] = 0x88;
  c.writeBigUInt64BE(BigInt(lba), 2);
  c.writeUInt32BE(blocks, 10);
  return [...c];
}

/** "GOOD", "response N" or "key/asc/ascq" (hex). */
function outcome(r: { response: number; status: number; sense: Buffer }): string {
  if (r.response !== Response.OK) return `response ${r.response}`;
  if (r.status === GOOD) return 'GOOD';
  return `${(r.sense[2]! & 0x0f).toString(16)}/${r.sense[12]!.toString(16)}/${r.sense[13]!.toString(16)}`;
}

describe.skipIf(!tgtdAvailable())('passthrough LUN lifecycle in the engine (tgtd on loopback)', () => {
  let dir = '';
  let tgt: Tgtd;
  let engine: VhbaEngineInstance;
  let frontend: TestFrontend;
  let spec: LunSpec;

  /** TS-path commands of the first request queue so far. */
  const tsCommands = () => engine.list()[0]!.requestQueues!.find((q) => q.queue === FIRST_REQUEST_QUEUE)!.commands;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'vhba-pt-engine-'));
    tgt = await startTgtd({ luns: [{ sizeBytes: 8 << 20, blockSize: BLOCK }] });
    engine = createEngine(pino({ level: process.env.VHBA_TEST_LOG ?? 'silent' }));
    const socketPath = join(dir, 'vm', 'hba0.sock');
    await engine.createController({ id: CONTROLLER, socketPath });
    await engine.attachLun(CONTROLLER, {
      target: 0, lun: 0, backing: { kind: 'memory', sizeBytes: 1 << 20 },
      params: { logicalBlockSize: 512, physicalBlockSize: 4096, serial: 'EMU', wwn: '5000c50000000e03', readOnly: false },
    });
    frontend = TestFrontend.connect(socketPath);
    await frontend.setup({ memoryBytes: 64 << 20, features: [VirtioScsiFeature.HOTPLUG] });
    spec = { target: 0, lun: 1, backing: { kind: 'iscsi', portal: tgt.portal, iqn: tgt.iqn, lun: tgt.luns[0]!, policy: { rawio: false, timeoutMs: 5000 } } };
  });

  afterAll(async () => {
    frontend?.close();
    await engine?.close();
    await tgt?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('attach probes the LUN and raises TRANSPORT_RESET/RESCAN', async () => {
    const event = frontend.submit(EVENT_QUEUE, Buffer.alloc(0), EVENT_INFO_SIZE);
    await new Promise((r) => setTimeout(r, 50));
    const identity = await engine.attachLun(CONTROLLER, spec);
    expect(identity).toMatchObject({ peripheralDeviceType: 0, logicalBlockSize: BLOCK, sizeBytes: 8 << 20 });
    const { written } = await event;
    expect(written.readUInt32LE(0)).toBe(EventType.TRANSPORT_RESET);
    expect([...written.subarray(4, 8)]).toEqual([1, 0, 0, 1]);
    expect(written.readUInt32LE(12)).toBe(ResetReason.RESCAN);
    expect(engine.list()[0]!.luns[1]!.device).toEqual(identity);
  });

  it('READs are served natively: counted in list(), not by the TypeScript path', async () => {
    // The target may report its own unit attention first (a new I_T nexus).
    for (let i = 0; i < 3 && outcome(await frontend.command(0, 1, [0, 0, 0, 0, 0, 0])) !== 'GOOD'; i++);
    const before = tsCommands();
    const readsBefore = engine.list()[0]!.luns[1]!.reads;
    for (let i = 0; i < 8; i++) expect(outcome(await frontend.command(0, 1, read16(i * 8, 8), { dataInLength: 8 * BLOCK }))).toBe('GOOD');
    expect(tsCommands()).toBe(before);
    expect(engine.list()[0]!.luns[1]!.reads - readsBefore).toBe(8);
    expect(engine.list()[0]!.luns[1]!.bytesRead).toBeGreaterThanOrEqual(8 * 8 * BLOCK);
  });

  it('flush is SYNCHRONIZE CACHE at the target; resize and snapshot are refused', async () => {
    await engine.flushLun(CONTROLLER, 0, 1);
    const resize = await engine.resizeLun(CONTROLLER, 0, 1, 16 << 20).catch((e: unknown) => e);
    expect(resize).toBeInstanceOf(EngineError);
    expect((resize as EngineError).code).toBe('FAILED_PRECONDITION');
    const snap = await engine.snapshotLun(CONTROLLER, 0, 1, join(dir, 'snap.img')).catch((e: unknown) => e);
    expect((snap as EngineError).code).toBe('FAILED_PRECONDITION');
  });

  it('detach with native READs in flight: every command completes, later ones get the target\'s answer; re-attach works', async () => {
    const inFlight = Array.from({ length: 16 }, (_, i) => frontend.command(0, 1, read16(i * 64, 64), { dataInLength: 64 * BLOCK, tag: BigInt(1000 + i) }));
    await new Promise((r) => setImmediate(r));
    await engine.detachLun(CONTROLLER, 0, 1);
    const results = (await Promise.all(inFlight)).map(outcome);
    for (const r of results) expect(['GOOD', '5/25/0']).toContain(r); // done at the device, or after the LUN went
    expect(outcome(await frontend.command(0, 1, [0, 0, 0, 0, 0, 0]))).toBe('5/25/0');
    expect(engine.list()[0]!.luns.map((l) => l.lun)).toEqual([0]);
    const again = await engine.attachLun(CONTROLLER, spec);
    expect(again).toMatchObject({ sizeBytes: 8 << 20 });
    for (let i = 0; i < 3 && outcome(await frontend.command(0, 1, [0, 0, 0, 0, 0, 0])) !== 'GOOD'; i++);
    expect(outcome(await frontend.command(0, 1, read16(0, 1), { dataInLength: BLOCK }))).toBe('GOOD');
  });
});
