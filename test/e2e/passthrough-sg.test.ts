// Passthrough LUNs over SG_IO (issue 8) against real kernel SCSI devices: a
// QEMU guest (TCG) makes a scsi_debug disk and a LIO fileio disk seen through
// two tcm_loop initiators (test/passthrough/guest-devices.sh), and runs the
// vhba engine itself — the host's node, our built addon and sg3-utils, via the
// host's root shared over virtio-9p (test/guest/host-root.ts). The checks run
// in the guest (test/passthrough/in-guest.ts); this file asserts on what they
// saw: identity pages byte for byte, 4096-byte blocks, data round trips,
// PERSISTENT RESERVE seen by the other initiator, a refused opcode that never
// reaches the device, and a device removed mid-I/O.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Guest } from '../guest/qemu.ts';
import { HOST_ROOT_MOUNT, HOST_ROOT_SCRATCH, bootWithHostRoot, hostRootShell } from '../guest/host-root.ts';
import { repoRoot } from '../guest/image.ts';
import type { PageComparison, RefusedCheck, RemovalCheck, ReservationCheck, RoundTrip } from '../passthrough/scenario.ts';

const GOOD = 0;
const CHECK_CONDITION = 2;
const RESERVATION_CONFLICT = 0x18;

interface Devices {
  scsiDebug: { block: string; sg: string; vendor: string; model: string };
  lioA: { block: string; sg: string; model: string; initiator: string };
  lioB: { block: string; sg: string; model: string; initiator: string };
  lioSerial: string;
  byId: Record<string, string>;
}

type Identity = Record<'inquiry' | 'vpd80' | 'vpd83' | 'readCapacity16', PageComparison>;
interface Results {
  fatal?: string;
  attach?: { scsiDebug?: { logicalBlockSize: number; serial: string; wwn: string; vendor: string }; lio?: { logicalBlockSize: number; serial: string; wwn: string }; error?: string };
  identityScsiDebug?: Identity;
  identityLio?: Identity;
  roundTripScsiDebug?: RoundTrip;
  roundTripLio?: RoundTrip;
  persistentReserve?: ReservationCheck;
  refused?: RefusedCheck;
  timeout?: { timeoutMs: number; armed: { code: number | null }; stuck: { response: number; status: number; error?: string }; ms: number; after: { response: number; status: number } };
  removal?: RemovalCheck & { deleteResult: { code: number | null; output: string }; deviceGone: boolean };
  close?: string;
  timings?: Record<string, number>;
}

/** The JSON document printed between `begin` and `end` markers. */
function between(output: string, begin: string, end: string): string {
  const b = output.indexOf(`${begin}\n`);
  const e = output.indexOf(`\n${end}`, b);
  if (b < 0 || e < 0) throw new Error(`no ${begin}…${end} in output:\n${output.slice(-4000)}`);
  return output.slice(b + begin.length + 1, e);
}

/** Fails with the section's own error when a section threw in the guest. */
function sectionOf<K extends keyof Results>(results: Results, key: K): NonNullable<Results[K]> {
  const value = results[key] as unknown;
  if (value === undefined) throw new Error(`no ${key} in the guest's results${results.fatal ? `: ${results.fatal}` : ''}`);
  if (typeof value === 'object' && value !== null && 'error' in value && Object.keys(value).length === 1) {
    throw new Error(`${key} failed in the guest: ${(value as { error: string }).error}`);
  }
  return value as NonNullable<Results[K]>;
}

describe('passthrough LUNs over SG_IO (scsi_debug + LIO in a guest)', () => {
  let guest: Guest | undefined;
  let devices: Devices;
  let results: Results = {};
  const timings: Record<string, number> = {};

  beforeAll(async () => {
    let t = Date.now();
    guest = await bootWithHostRoot({ name: 'passthrough-sg' });
    timings.boot = Date.now() - t;
    t = Date.now();
    const inHost = await hostRootShell(guest);
    timings.mount = Date.now() - t;
    t = Date.now();
    const made = await guest.check(`sh /host${repoRoot}/test/passthrough/guest-devices.sh ${HOST_ROOT_MOUNT}${HOST_ROOT_SCRATCH}/devices.json`, { timeoutMs: 120_000 });
    timings.devices = Date.now() - t;
    devices = JSON.parse(between(made, 'VHBA-DEVICES-BEGIN', 'VHBA-DEVICES-END')) as Devices;
    t = Date.now();
    const run = await inHost(`cd ${repoRoot} && node test/passthrough/in-guest.ts ${HOST_ROOT_SCRATCH}/devices.json`, { timeoutMs: 300_000 });
    timings.inGuest = Date.now() - t;
    const document = between(run.output, 'VHBA-PT-RESULT-BEGIN', 'VHBA-PT-RESULT-END');
    writeFileSync(join(guest.logDir, 'results.json'), document);
    console.log(`passthrough-sg: results in ${join(guest.logDir, 'results.json')}`);
    results = JSON.parse(document) as Results;
    console.log(`passthrough-sg: host timings ${JSON.stringify(timings)}, guest timings ${JSON.stringify(results.timings)}; log ${guest.consoleLogPath}`);
    if (run.exitCode !== 0 || results.fatal) console.log(`in-guest.ts exit ${run.exitCode}:\n${run.output.slice(-6000)}`);
  });

  afterAll(async () => {
    await guest?.shutdown();
  });

  it('the guest has a 4096-byte scsi_debug disk and one LIO LUN behind two initiators', () => {
    expect(devices.scsiDebug.model).toBe('scsi_debug');
    expect(devices.lioA.model).toBe('FILEIO');
    expect(devices.lioB.model).toBe('FILEIO');
    expect(devices.lioA.initiator).not.toBe(devices.lioB.initiator);
    expect(devices.lioA.block).not.toBe(devices.lioB.block);
    expect(results.fatal).toBeUndefined();
  });

  it('attach probes the devices: identity and 4096-byte blocks', () => {
    const attach = sectionOf(results, 'attach');
    expect(attach.scsiDebug?.logicalBlockSize).toBe(4096);
    expect(attach.scsiDebug?.vendor).toBe('Linux');
    expect(attach.lio?.logicalBlockSize).toBe(4096);
    expect(attach.lio?.serial).toBe(devices.lioSerial);
    expect(attach.lio?.wwn).toMatch(/^6001405[0-9a-f]+$/);
  });

  for (const [label, key] of [['scsi_debug', 'identityScsiDebug'], ['LIO', 'identityLio']] as const) {
    it(`${label}: INQUIRY, VPD 80h/83h, READ CAPACITY(16) through vhba equal the device's, byte for byte`, () => {
      const pages = sectionOf(results, key);
      for (const [name, page] of Object.entries(pages)) {
        expect(page.vhbaStatus, `${name} status through vhba`).toBe(GOOD);
        expect(page.directStatus, `${name} status direct`).toBe(GOOD);
        expect(page.direct.length, `${name} has data`).toBeGreaterThan(8);
        expect(page.vhba, name).toBe(page.direct);
      }
      // READ CAPACITY(16) bytes 8..11: LOGICAL BLOCK LENGTH IN BYTES (SBC-3 §5.16.2).
      expect(Buffer.from(pages.readCapacity16.vhba, 'hex').readUInt32BE(8)).toBe(4096);
    });
  }

  for (const [label, key] of [['scsi_debug', 'roundTripScsiDebug'], ['LIO (read back by the other initiator)', 'roundTripLio']] as const) {
    it(`${label}: writes and reads round-trip both ways with equal checksums`, () => {
      const rt = sectionOf(results, key);
      expect(rt.statuses).toEqual([GOOD, GOOD, GOOD, GOOD, GOOD]);
      expect(rt.vhbaThenVhba).toBe(rt.written);
      expect(rt.vhbaThenDirect).toBe(rt.written);
      expect(rt.directThenVhba).toBe(rt.directWritten);
    });
  }

  it('PERSISTENT RESERVE OUT through vhba: the other initiator sees the reservation and gets RESERVATION CONFLICT', () => {
    const pr = sectionOf(results, 'persistentReserve');
    expect(pr.register).toBe(GOOD);
    expect(pr.reserve).toBe(GOOD);
    expect(pr.seenByOther.key).toBe('7668626100000001');
    expect(pr.seenByOther.type).toBe(1); // WRITE EXCLUSIVE
    expect(pr.otherWriteStatus).toBe(RESERVATION_CONFLICT);
    expect(pr.holderWriteStatus).toBe(GOOD);
    expect(pr.clear).toBe(GOOD);
    expect(pr.afterClear.key).toBeUndefined();
  });

  it('WRITE BUFFER is refused with ILLEGAL REQUEST and never reaches the device', () => {
    const refused = sectionOf(results, 'refused');
    expect(refused.vhba.response).toBe(0);
    expect(refused.vhba.status).toBe(CHECK_CONDITION);
    const sense = Buffer.from(refused.vhba.sense, 'hex');
    expect([sense[2]! & 0x0f, sense[12], sense[13]]).toEqual([0x5, 0x20, 0x00]);
    // The device saw no microcode download: no unit attention 3Fh/16h.
    expect(refused.directAfterRefused.status).toBe(GOOD);
    // Control: the same command sent directly leaves scsi_debug's unit
    // attention MICROCODE HAS BEEN CHANGED WITHOUT RESET (3Fh/16h).
    expect(refused.control.writeBuffer.status).toBe(GOOD);
    expect(refused.control.testUnitReady.status).toBe(CHECK_CONDITION);
    const ua = Buffer.from(refused.control.testUnitReady.sense, 'hex');
    expect([ua[2]! & 0x0f, ua[12], ua[13]]).toEqual([0x6, 0x3f, 0x16]);
  });

  it('a command the device never answers ends ABORTED after the LUN\'s timeout; the device works afterwards', () => {
    const timeout = sectionOf(results, 'timeout');
    expect(timeout.armed.code).toBe(0);
    expect(timeout.stuck.error).toBeUndefined();
    expect(timeout.stuck.response).toBe(2); // virtio-scsi ABORTED
    expect(timeout.ms).toBeGreaterThanOrEqual(timeout.timeoutMs - 100);
    expect(timeout.ms).toBeLessThan(timeout.timeoutMs + 15_000);
    expect(timeout.after).toMatchObject({ response: 0, status: GOOD });
  });

  it('a device deleted mid-I/O fails its commands within seconds; the other LUNs keep answering', () => {
    const removal = sectionOf(results, 'removal');
    expect(removal.deleteResult.code).toBe(0);
    expect(removal.deviceGone).toBe(true);
    expect(removal.readers.length).toBe(4);
    for (const reader of removal.readers) {
      expect(reader.okBefore, 'reads succeeded before the removal').toBeGreaterThan(0);
      expect(reader.hung, 'no command hung').toBe(0);
      expect(reader.firstFailure, 'every reader saw a failure').toBeDefined();
      expect(reader.firstFailure!.msAfterRemoval).toBeLessThan(15_000);
      const f = reader.firstFailure!;
      expect(f.response !== 0 || f.status === CHECK_CONDITION).toBe(true);
    }
    expect(removal.later.error).toBeUndefined();
    expect(removal.later.response !== 0 || removal.later.status === CHECK_CONDITION).toBe(true);
    expect(removal.later.ms).toBeLessThan(15_000);
    expect(removal.others.emulated).toEqual({ response: 0, status: GOOD });
    expect(removal.others.lio).toEqual({ response: 0, status: GOOD });
  });

  it('the engine closes cleanly afterwards', () => {
    expect(results.close).toBe('closed');
  });
});
