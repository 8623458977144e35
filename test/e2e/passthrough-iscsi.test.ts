// Passthrough LUNs over iSCSI (issue 8) against a real target: tgtd on
// loopback (test/passthrough/tgtd.ts) with a 4096-byte LUN, reached by the
// engine (libiscsi, in-process) through a relay that records every CDB on the
// wire (test/passthrough/iscsi-relay.ts), and directly by a second libiscsi
// session with another initiator name (native.openPassthrough). Same checks
// as the SG_IO guest test (test/passthrough/scenario.ts): identity pages byte
// for byte, 4096-byte blocks, round trips, PERSISTENT RESERVE seen by the
// other initiator, refused opcodes that never reach the wire, and tgtd killed
// mid-I/O while the engine keeps serving its emulated LUN.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine, type VhbaEngineInstance } from '../../hba/engine.ts';
import type { DeviceIdentity } from '../../hba/engine-api.ts';
import { native, type PassthroughDevice } from '../../hba/native/index.ts';
import { TestFrontend } from '../../hba/vhost-user/test-frontend.ts';
import { startIscsiRelay, type IscsiRelay } from '../passthrough/iscsi-relay.ts';
import {
  compareIdentity, persistentReserve, removalUnderLoad, roundTrip, VhbaPath, writeBufferMicrocode,
  type DirectPath, type Outcome,
} from '../passthrough/scenario.ts';
import { startTgtd, tgtdAvailable, type Tgtd } from '../passthrough/tgtd.ts';

const GOOD = 0;
const CHECK_CONDITION = 2;
const RESERVATION_CONFLICT = 0x18;
const BLOCK = 4096;
const ENGINE_INITIATOR = 'iqn.2026-11.io.vhba.test:engine';
const DIRECT_INITIATOR = 'iqn.2026-11.io.vhba.test:direct';

/** A second libiscsi session, as DirectPath. */
function directPath(device: PassthroughDevice): DirectPath {
  return {
    name: device.description,
    async execute(cdb, options = {}): Promise<Outcome> {
      const o = await device.execute(cdb, { ...options, timeoutMs: 10_000 });
      return { response: o.response, status: o.status, sense: o.sense, data: o.dataIn, ...(o.error ? { error: o.error } : {}) };
    },
  };
}

describe.skipIf(!tgtdAvailable())('passthrough LUNs over iSCSI (tgtd on loopback)', () => {
  let dir = '';
  let tgt: Tgtd;
  let relay: IscsiRelay;
  let engine: VhbaEngineInstance;
  let frontend: TestFrontend;
  let direct: PassthroughDevice;
  let identity: DeviceIdentity | void;
  let emulated: VhbaPath;
  let iscsi: VhbaPath;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'vhba-pt-iscsi-'));
    tgt = await startTgtd({ luns: [{ sizeBytes: 16 << 20, blockSize: BLOCK }] });
    relay = await startIscsiRelay(tgt.portal);
    engine = createEngine(pino({ level: process.env.VHBA_TEST_LOG ?? 'silent' }));
    const socketPath = join(dir, 'vm', 'hba0.sock');
    await engine.createController({ id: 'pt-iscsi', socketPath });
    await engine.attachLun('pt-iscsi', {
      target: 0, lun: 0, backing: { kind: 'memory', sizeBytes: 4 << 20 },
      params: { logicalBlockSize: 512, physicalBlockSize: 4096, serial: 'VHBAPTEMU1', wwn: '5000c50000000e02', readOnly: false },
    });
    identity = await engine.attachLun('pt-iscsi', {
      target: 0, lun: 1,
      backing: { kind: 'iscsi', portal: relay.portal, iqn: tgt.iqn, lun: tgt.luns[0]!, initiatorName: ENGINE_INITIATOR, policy: { rawio: false, timeoutMs: 5000 } },
    });
    direct = await native.openPassthrough({ kind: 'iscsi', portal: tgt.portal, iqn: tgt.iqn, lun: tgt.luns[0]!, initiatorName: DIRECT_INITIATOR }, { timeoutMs: 5000 });
    frontend = TestFrontend.connect(socketPath);
    await frontend.setup({ memoryBytes: 128 << 20 });
    emulated = new VhbaPath(frontend, 0, 0);
    iscsi = new VhbaPath(frontend, 0, 1);
  });

  afterAll(async () => {
    frontend?.close();
    direct?.close();
    await engine?.close();
    await relay?.close();
    await tgt?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('attach probes the LUN: tgt identity, 4096-byte blocks, 16 MiB', () => {
    expect(identity).toBeDefined();
    const id = identity as DeviceIdentity;
    expect(id.peripheralDeviceType).toBe(0);
    expect(id.logicalBlockSize).toBe(BLOCK);
    expect(id.sizeBytes).toBe(16 << 20);
  });

  it('INQUIRY, VPD 80h/83h, READ CAPACITY(16) through vhba equal the direct session\'s, byte for byte', async () => {
    const pages = await compareIdentity(iscsi, directPath(direct));
    for (const [name, page] of Object.entries(pages)) {
      expect(page.vhbaStatus, `${name} through vhba`).toBe(GOOD);
      expect(page.directStatus, `${name} direct`).toBe(GOOD);
      expect(page.direct.length, `${name} has data`).toBeGreaterThan(8);
      expect(page.vhba, name).toBe(page.direct);
    }
    expect(Buffer.from(pages.readCapacity16.vhba, 'hex').readUInt32BE(8)).toBe(BLOCK);
  });

  it('writes and reads round-trip both ways with equal checksums', async () => {
    const rt = await roundTrip(iscsi, directPath(direct), BLOCK, 16, 16);
    expect(rt.statuses).toEqual([GOOD, GOOD, GOOD, GOOD, GOOD]);
    expect(rt.vhbaThenVhba).toBe(rt.written);
    expect(rt.vhbaThenDirect).toBe(rt.written);
    expect(rt.directThenVhba).toBe(rt.directWritten);
  });

  it('PERSISTENT RESERVE OUT through vhba: the other initiator sees it and gets RESERVATION CONFLICT', async () => {
    const pr = await persistentReserve(iscsi, directPath(direct), BLOCK, 0x7668626100000002n);
    expect(pr.register).toBe(GOOD);
    expect(pr.reserve).toBe(GOOD);
    expect(pr.seenByOther.key).toBe('7668626100000002');
    expect(pr.seenByOther.type).toBe(1);
    expect(pr.otherWriteStatus).toBe(RESERVATION_CONFLICT);
    expect(pr.holderWriteStatus).toBe(GOOD);
    expect(pr.clear).toBe(GOOD);
    expect(pr.afterClear.key).toBeUndefined();
  });

  it('WRITE BUFFER and a vendor-specific opcode get ILLEGAL REQUEST and never reach the wire', async () => {
    const before = relay.opcodes.length;
    const wb = writeBufferMicrocode(512);
    const refused = [
      await iscsi.once(wb.cdb, { dataOut: wb.data }),
      await iscsi.once(Buffer.from([0xc0, 0, 0, 0, 0, 0])),
    ];
    for (const o of refused) {
      expect(o.response).toBe(0);
      expect(o.status).toBe(CHECK_CONDITION);
      expect([o.sense[2]! & 0x0f, o.sense[12], o.sense[13]]).toEqual([0x5, 0x20, 0x00]);
    }
    // Control: a command after them does cross the relay.
    const tur = await iscsi.execute(Buffer.alloc(6));
    expect(tur.status).toBe(GOOD);
    const seen = relay.opcodes.slice(before);
    expect(seen).toContain(0x00);
    expect(seen).not.toContain(0x3b);
    expect(seen).not.toContain(0xc0);
    // The relay saw the engine's earlier traffic too (it parses PDUs correctly).
    expect(relay.opcodes).toEqual(expect.arrayContaining([0x12, 0x28, 0x2a, 0x5f]));
    expect(relay.opcodes).not.toContain(0x3b);
  });

  it('tgtd killed mid-I/O: commands fail promptly, the emulated LUN still answers', async () => {
    const removal = await removalUnderLoad({
      vhba: iscsi, blockSize: BLOCK, readers: 4, warmupMs: 500, deadlineMs: 20_000,
      remove: () => tgt.kill(),
      others: { emulated: { path: emulated, blockSize: 512 } },
    });
    console.log(`passthrough-iscsi: removal ${JSON.stringify(removal)}`);
    for (const reader of removal.readers) {
      expect(reader.okBefore).toBeGreaterThan(0);
      expect(reader.hung).toBe(0);
      expect(reader.firstFailure).toBeDefined();
      expect(reader.firstFailure!.msAfterRemoval).toBeLessThan(10_000);
      expect(reader.firstFailure!.response !== 0 || reader.firstFailure!.status === CHECK_CONDITION).toBe(true);
    }
    expect(removal.later.error).toBeUndefined();
    expect(removal.later.response).not.toBe(0);
    expect(removal.later.ms).toBeLessThan(10_000);
    expect(removal.others.emulated).toEqual({ response: 0, status: GOOD });
  });
});
