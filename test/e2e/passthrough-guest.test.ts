// Issue 8's promise in a real Linux guest driver: `vhba serve` (the product
// path: engine, control API, directory reconciler, in process) serves a QEMU
// (TCG) guest through vhost-user-scsi-pci; the manifest directory holds an
// emulated disk and a `deviceType: lun` disk whose source.iscsi is a
// 4096-byte LUN of tgtd on loopback (test/passthrough/tgtd.ts), reached by
// the engine through a relay that records every CDB on the wire
// (test/passthrough/iscsi-relay.ts). The Debian guest's sd driver, udev and
// sg3-utils see the device's own identity (vendor, product, serial, NAA WWN),
// capacity and 4096-byte sectors, byte for byte what a second libiscsi
// session on the host (another initiator name) reads from tgtd, and what
// serve predicted (disks.json, `vhba ls --json`); data written in the guest
// is in tgtd's backing file; a PERSISTENT RESERVE taken by the guest is seen
// by the other initiator; WRITE BUFFER from the guest gets ILLEGAL REQUEST and
// never reaches the wire; deleting the lun manifest unplugs it from the guest
// while the emulated disk stays.
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, openSync, readFileSync, readSync, closeSync, rmSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { putManifest, waitUntil } from '../wait.ts';
import { runLs, type LsController } from '../../cmd/ls.ts';
import { qemuArgsFor } from '../../cmd/qemu-args.ts';
import { defaultEngineFactory, startServe, type ServeHandle } from '../../cmd/serve.ts';
import { resolveDirs, type GuestDisk, type GuestVm } from '../../cmd/topology.ts';
import type { DeviceIdentity } from '../../hba/engine-api.ts';
import { native, type PassthroughDevice } from '../../hba/native/index.ts';
import { PassthroughPort } from '../../hba/backends/passthrough-port.ts';
import { probeIdentity } from '../../hba/scsi/passthrough-identity.ts';
import { Guest } from '../guest/qemu.ts';
import { startIscsiRelay, type IscsiRelay } from '../passthrough/iscsi-relay.ts';
import { decodeReadReservation, rw10 } from '../passthrough/scenario.ts';
import { startTgtd, tgtdAvailable, type Tgtd } from '../passthrough/tgtd.ts';

const MiB = 1024 * 1024;
const MEMORY = '512M';
const VM = 'ptg';
const BLOCK = 4096;
const LUN_BYTES = 24 * MiB;
const ENGINE_INITIATOR = 'iqn.2026-11.io.vhba.test:guest-engine';
const DIRECT_INITIATOR = 'iqn.2026-11.io.vhba.test:guest-direct';
const PR_KEY = '0x766862610000a001';
const GOOD = 0;
const RESERVATION_CONFLICT = 0x18;
const PATTERN_LBA = 1000;
const PATTERN_BLOCKS = 32;

const EMULATED = `apiVersion: vhba.io/v1alpha1
kind: VirtualDisk
metadata: {name: emu}
spec: {vmName: ${VM}, capacity: 32Mi, source: {file: {path: ${VM}/emu.img}}}
`;

function lunManifest(portal: string, iqn: string, lun: number): string {
  return `apiVersion: vhba.io/v1alpha1
kind: VirtualDisk
metadata: {name: san}
spec:
  vmName: ${VM}
  deviceType: lun
  source:
    iscsi: {portal: "${portal}", iqn: ${iqn}, lun: ${lun}, initiatorName: "${ENGINE_INITIATOR}"}
`;
}

/** The bytes of `length` at `offset` of a host file. */
function readAt(path: string, offset: number, length: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(length);
    const n = readSync(fd, buf, 0, length, offset);
    return buf.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}

/** `text` as a literal inside a RegExp. */
const escape = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

describe.skipIf(!tgtdAvailable())('a passthrough iSCSI LUN in a real Linux guest, served by vhba serve', () => {
  let dir = '';
  let config = '';
  let tgt: Tgtd;
  let relay: IscsiRelay;
  let serve: ServeHandle | undefined;
  let guest: Guest | undefined;
  let direct: PassthroughDevice;
  /** What tgtd reports to the second initiator (probed like the engine does). */
  let tgtIdentity: DeviceIdentity;
  let lun: GuestDisk;
  let emu: GuestDisk;
  /** The guest's sdX of each disk, found by H:C:T:L (not through udev). */
  let lunDev = '';
  let emuDev = '';
  const log = pino({ level: process.env.VHBA_TEST_LOG ?? 'warn' });

  function vm(): GuestVm {
    return serve!.topology.vms.find((v) => v.vmName === VM)!;
  }
  /** The sd name of the disk at target:lun of the vhba HBA (from sysfs). */
  async function sdAt(d: GuestDisk): Promise<string> {
    const hctl = `[0-9]*:0:${d.target}:${d.lun}`;
    expect(await guest!.pollUntil(`ls /sys/bus/scsi/devices/${hctl}/block/ >/dev/null 2>&1`, 60)).toBe(true);
    return (await guest!.check(`ls /sys/bus/scsi/devices/${hctl}/block/`)).trim();
  }
  /** Runs a command at tgtd from the second initiator. */
  async function directly(cdb: Buffer, options: { dataOut?: Buffer; dataInLength?: number } = {}) {
    const o = await direct.execute(cdb, { ...options, timeoutMs: 10_000 });
    expect(o.response, o.error).toBe(0);
    return o;
  }

  beforeAll(async () => {
    const t0 = Date.now();
    dir = mkdtempSync(join(tmpdir(), 'vhba-pt-guest-'));
    config = join(dir, 'config');
    mkdirSync(config);
    tgt = await startTgtd({ luns: [{ sizeBytes: LUN_BYTES, blockSize: BLOCK }] });
    relay = await startIscsiRelay(tgt.portal);
    direct = await native.openPassthrough({ kind: 'iscsi', portal: tgt.portal, iqn: tgt.iqn, lun: tgt.luns[0]!, initiatorName: DIRECT_INITIATOR }, { timeoutMs: 5000 });
    tgtIdentity = await probeIdentity(new PassthroughPort(direct, { timeoutMs: 5000 }));
    putManifest(config, 'emu.yaml', EMULATED);
    putManifest(config, 'san.yaml', lunManifest(relay.portal, tgt.iqn, tgt.luns[0]!));
    const started = await startServe({
      configPath: config, dirs: resolveDirs(join(dir, 's')), logger: log, engineFactory: defaultEngineFactory,
      out: (t) => process.stdout.write(t), err: (t) => process.stderr.write(t), debounceMs: 200, resyncMs: 10_000,
    });
    if (typeof started === 'number') throw new Error(`vhba serve failed: ${started}`);
    serve = started;
    lun = vm().disks.find((d) => d.key === 'default/san')!;
    emu = vm().disks.find((d) => d.key === 'default/emu')!;
    const tServe = Date.now() - t0;
    guest = await Guest.boot({ name: 'passthrough-guest', memory: MEMORY, extraArgs: qemuArgsFor(vm(), MEMORY) });
    console.log(`passthrough-guest: tgtd + relay + serve ${tServe} ms; boot ${guest.bootMs} ms; log ${guest.consoleLogPath}`);
    lunDev = await sdAt(lun);
    emuDev = await sdAt(emu);
  }, 240_000);

  afterAll(async () => {
    await guest?.shutdown();
    await serve?.stop();
    direct?.close();
    await relay?.close();
    await tgt?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('serve attached the LUN with the device\'s identity: disks.json and vhba ls --json agree with tgtd', async () => {
    expect(lun.passthrough?.attachError).toBeUndefined();
    const device = lun.passthrough?.device;
    expect(device).toEqual(tgtIdentity);
    expect(tgtIdentity).toMatchObject({ peripheralDeviceType: 0, logicalBlockSize: BLOCK, sizeBytes: LUN_BYTES });
    expect(tgtIdentity.wwn).toMatch(/^[0-9a-f]{16,32}$/);
    expect(lun).toMatchObject({ serial: tgtIdentity.serial, wwn: tgtIdentity.wwn, sizeBytes: LUN_BYTES, logicalBlockSize: BLOCK });
    expect(lun.guestDevicePaths).toEqual([`/dev/disk/by-id/scsi-3${tgtIdentity.wwn}`, `/dev/disk/by-id/wwn-0x${tgtIdentity.wwn}`]);
    // disks.json, as written for the VM.
    const disksJson = JSON.parse(readFileSync(join(dir, 's', VM, 'disks.json'), 'utf8')) as GuestVm;
    const fromFile = disksJson.disks.find((d) => d.key === 'default/san')!;
    expect(fromFile.guestDevicePaths).toEqual(lun.guestDevicePaths);
    expect(fromFile.passthrough?.device).toEqual(tgtIdentity);
    // vhba ls --json against serve's control API.
    let text = '';
    expect(await runLs(['--engine', serve!.controlAddress, '--json'], (t) => { text += t; }, (t) => process.stderr.write(t))).toBe(0);
    const controllers = (JSON.parse(text) as { controllers: LsController[] }).controllers;
    const listed = controllers.flatMap((c) => c.luns).find((l) => l.target === lun.target && l.lun === lun.lun)!;
    expect(listed.passthrough?.device).toEqual(tgtIdentity);
    expect(listed).toMatchObject({ serial: tgtIdentity.serial, wwn: tgtIdentity.wwn, sizeBytes: LUN_BYTES, logicalBlockSize: BLOCK });
    expect(listed.guestDevicePaths).toEqual(lun.guestDevicePaths);
  });

  it('the guest\'s sd driver sees a disk of the LUN\'s size with 4096-byte logical blocks', async () => {
    const out = await guest!.check(`cat /sys/block/${lunDev}/device/type /sys/block/${lunDev}/queue/logical_block_size /sys/block/${lunDev}/queue/physical_block_size; blockdev --getsize64 /dev/${lunDev}`);
    const [type, logical, physical, size] = out.trim().split(/\s+/).map(Number);
    expect(type).toBe(0);
    expect(logical).toBe(BLOCK);
    expect(physical).toBe(tgtIdentity.physicalBlockSize);
    expect(size).toBe(LUN_BYTES);
    // The emulated disk next to it keeps its own geometry.
    expect(Number((await guest!.check(`blockdev --getsize64 /dev/${emuDev}`)).trim())).toBe(32 * MiB);
  });

  it('sg_inq and sg_vpd in the guest show tgtd\'s vendor, product, serial and NAA WWN; the raw pages equal the direct session\'s', async () => {
    const inq = await guest!.check(`sg_inq /dev/${lunDev}`);
    expect(inq).toMatch(new RegExp(`Vendor identification: ${escape(tgtIdentity.vendor.trim())}\\s*$`, 'm'));
    expect(inq).toMatch(new RegExp(`Product identification: ${escape(tgtIdentity.product.trim())}\\s*$`, 'm'));
    const sn = await guest!.check(`sg_vpd -p 0x80 /dev/${lunDev}`);
    expect(sn).toMatch(new RegExp(`Unit serial number:\\s+${escape(tgtIdentity.serial)}\\s*$`, 'm'));
    const di = await guest!.check(`sg_vpd -p 0x83 /dev/${lunDev}`);
    expect(di).toMatch(/designator type: NAA/);
    expect(di.toLowerCase()).toContain(`0x${tgtIdentity.wwn}`);
    // Byte for byte: standard INQUIRY, VPD 80h, 83h and READ CAPACITY(16) as
    // the guest gets them (sg_raw through the sd node) vs from tgtd directly.
    const pages: Record<string, Buffer> = {
      inquiry: Buffer.from([0x12, 0, 0, 0, 0xff, 0]),
      vpd80: Buffer.from([0x12, 1, 0x80, 0, 0xff, 0]),
      vpd83: Buffer.from([0x12, 1, 0x83, 0, 0xff, 0]),
      readCapacity16: Buffer.from([0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0]),
    };
    for (const [name, cdb] of Object.entries(pages)) {
      const length = cdb[0] === 0x9e ? 32 : 255;
      const hexCdb = [...cdb].map((b) => b.toString(16).padStart(2, '0')).join(' ');
      const got = await guest!.check(`sg_raw -r ${length} -o /tmp/${name} /dev/${lunDev} ${hexCdb} >/dev/null 2>/tmp/${name}.err && base64 /tmp/${name} || { cat /tmp/${name}.err; exit 1; }`);
      const want = await directly(cdb, { dataInLength: length });
      expect(want.status, name).toBe(GOOD);
      expect(Buffer.from(got.replace(/\s/g, ''), 'base64').toString('hex'), name).toBe(want.dataIn.toString('hex'));
    }
  });

  it('udev in the guest made exactly the by-id names serve predicted, pointing at the LUN\'s disk', async () => {
    for (const path of lun.guestDevicePaths) {
      expect(await guest!.pollUntil(`[ -e ${path} ]`, 30), path).toBe(true);
      expect((await guest!.check(`readlink -f ${path}`)).trim(), path).toBe(`/dev/${lunDev}`);
    }
    // The by-id names of the LUN's disk are exactly the predicted ones.
    const names = (await guest!.check(`for l in /dev/disk/by-id/*; do [ "$(readlink -f "$l")" = /dev/${lunDev} ] && echo "$l"; done; true`)).trim().split('\n').filter((l) => l !== '');
    expect(names.sort()).toEqual([...lun.guestDevicePaths].sort());
    // The emulated disk's predicted names point at the emulated disk.
    for (const path of emu.guestDevicePaths) expect((await guest!.check(`readlink -f ${path}`)).trim(), path).toBe(`/dev/${emuDev}`);
  });

  it('a checksummed pattern written with O_DIRECT 4096-byte blocks reads back in the guest and is in tgtd\'s backing file', async () => {
    const bytes = PATTERN_BLOCKS * BLOCK;
    const out = await guest!.check([
      `head -c ${bytes} /dev/urandom > /tmp/pat`,
      `dd if=/tmp/pat of=/dev/${lunDev} bs=${BLOCK} seek=${PATTERN_LBA} count=${PATTERN_BLOCKS} oflag=direct conv=fsync 2>/dev/null`,
      'sha256sum < /tmp/pat',
      `dd if=/dev/${lunDev} bs=${BLOCK} skip=${PATTERN_LBA} count=${PATTERN_BLOCKS} iflag=direct 2>/dev/null | sha256sum`,
    ].join(' && '));
    const [written, readBack] = out.trim().split('\n').map((l) => l.split(/\s+/)[0]);
    expect(written).toMatch(/^[0-9a-f]{64}$/);
    expect(readBack).toBe(written);
    expect(sha256(readAt(tgt.backingPaths[0]!, PATTERN_LBA * BLOCK, bytes))).toBe(written);
    // And the second initiator reads the same blocks from tgtd.
    const read = await directly(rw10(0x28, PATTERN_LBA, PATTERN_BLOCKS), { dataInLength: bytes });
    expect(read.status).toBe(GOOD);
    expect(sha256(read.dataIn)).toBe(written);
  });

  it('sg_persist register + reserve in the guest is seen by a second initiator on the host', async () => {
    const dev = `/dev/${lunDev}`;
    await guest!.check(`sg_persist --out --register --param-sark=${PR_KEY} ${dev} && sg_persist --out --reserve --param-rk=${PR_KEY} --prout-type=1 ${dev}`);
    const readReservation = Buffer.from([0x5e, 0x01, 0, 0, 0, 0, 0, 0, 64, 0]);
    const seen = await directly(readReservation, { dataInLength: 64 });
    expect(seen.status).toBe(GOOD);
    expect(decodeReadReservation(seen.dataIn)).toMatchObject({ key: BigInt(PR_KEY).toString(16), type: 1 });
    // WRITE EXCLUSIVE: the other initiator's write conflicts.
    const otherWrite = await directly(rw10(0x2a, 0, 1), { dataOut: Buffer.alloc(BLOCK, 0xee) });
    expect(otherWrite.status).toBe(RESERVATION_CONFLICT);
    // The guest sees its own reservation, then clears it; the other initiator sees none.
    expect(await guest!.check(`sg_persist --in --read-reservation ${dev}`)).toMatch(new RegExp(`Key=${PR_KEY}`, 'i'));
    await guest!.check(`sg_persist --out --clear --param-rk=${PR_KEY} ${dev}`);
    const after = await directly(readReservation, { dataInLength: 64 });
    expect(decodeReadReservation(after.dataIn).key).toBeUndefined();
  });

  it('WRITE BUFFER (download microcode) from the guest fails with ILLEGAL REQUEST and never reaches the wire', async () => {
    const before = relay.opcodes.length;
    const out = await guest!.run(`head -c 512 /dev/zero > /tmp/fw; sg_raw -s 512 -i /tmp/fw /dev/${lunDev} 3b 05 00 00 00 00 00 02 00 00`);
    expect(out.exitCode, out.output).not.toBe(0);
    expect(out.output).toMatch(/Check Condition/i);
    expect(out.output).toMatch(/Illegal Request/i);
    expect(out.output).toMatch(/Invalid command operation code/i);
    // A command after it does cross the relay; WRITE BUFFER never did.
    await guest!.check(`sg_turs /dev/${lunDev}`);
    await waitUntil(() => relay.opcodes.slice(before).includes(0x00), 'the TEST UNIT READY on the wire', 10_000);
    expect(relay.opcodes).not.toContain(0x3b);
  });

  it('deleting the lun disk\'s manifest unplugs it from the guest; the emulated disk stays', async () => {
    await guest!.check(`head -c 65536 /dev/urandom > /tmp/emu; dd if=/tmp/emu of=/dev/${emuDev} bs=65536 oflag=direct conv=fsync 2>/dev/null; sha256sum < /tmp/emu > /tmp/emu.sum`);
    const t0 = Date.now();
    unlinkSync(join(config, 'san.yaml'));
    const lunOf = () => serve!.engine.list().flatMap((c) => c.luns).find((l) => l.target === lun.target && l.lun === lun.lun);
    await waitUntil(() => lunOf() === undefined, 'serve to detach the LUN');
    const gone = await guest!.pollUntil(`[ ! -e /sys/block/${lunDev} ] && ${lun.guestDevicePaths.map((p) => `[ ! -e ${p} ]`).join(' && ')}`, 60);
    console.log(`passthrough-guest: lun manifest delete → disk and its by-id names gone from the guest: ${Date.now() - t0} ms`);
    expect(gone).toBe(true);
    expect(vm().disks.map((d) => d.key)).toEqual(['default/emu']);
    // The emulated disk is still there, same node, same data, same names.
    const sum = await guest!.check(`dd if=/dev/${emuDev} bs=65536 count=1 iflag=direct 2>/dev/null | sha256sum; cat /tmp/emu.sum`);
    const [got, want] = sum.trim().split('\n');
    expect(got).toBe(want);
    for (const path of emu.guestDevicePaths) expect((await guest!.check(`readlink -f ${path}`)).trim(), path).toBe(`/dev/${emuDev}`);
    // tgtd's LUN is untouched by the unplug: the pattern is still there.
    const read = await directly(rw10(0x28, PATTERN_LBA, 1), { dataInLength: BLOCK });
    expect(read.status).toBe(GOOD);
  });
});
