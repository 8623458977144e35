// `vhba serve` with passthrough (deviceType lun) disks, over the real control
// API with an in-memory engine that plays the devices: a hostDevice and an
// iSCSI LUN are attached with their policy and no parameters, the table and
// disks.json show the device's own identity, and a device the engine refuses
// is reported for its disk while the others keep being served.
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { DeviceIdentity, LunSpec } from '../hba/engine-api.ts';
import { startServe, type ServeHandle } from './serve.ts';
import { DeviceEngine, deviceIdentity } from './testing/device-engine.ts';
import { resolveDirs, type GuestVm } from './topology.ts';

const silent = pino({ level: 'silent' });

const identity = deviceIdentity;

/** The device each passthrough backing finds; anything else is "not a SCSI device". */
const DEVICES: Record<string, DeviceIdentity> = {
  '/dev/disk/by-id/wwn-0x5000c500abcdef01': identity({ serial: 'ZA1B2C3D', wwn: '5000c500abcdef01' }),
  'iscsi://127.0.0.1:3260/iqn.2003-01.org.example:disk1/1': identity({ vendor: 'IET     ', product: 'VIRTUAL-DISK    ', serial: 'beaf11', wwn: '', logicalBlockSize: 512, physicalBlockSize: 512, sizeBytes: 32 << 20 }),
};

const header = (name: string) => `apiVersion: vhba.io/v1alpha1\nkind: VirtualDisk\nmetadata: {name: ${name}}\n`;
const MANIFESTS = `${header('a-file')}spec: {vmName: vm1, capacity: 64Mi, source: {file: {path: vm1/a.img}}}
---
${header('b-host')}spec: {vmName: vm1, deviceType: lun, rawio: true, wwn: '0x5000C500ABCDEF01', source: {hostDevice: {path: /dev/disk/by-id/wwn-0x5000c500abcdef01}}}
---
${header('c-iscsi')}spec: {vmName: vm1, deviceType: lun, source: {iscsi: {portal: 127.0.0.1, iqn: 'iqn.2003-01.org.example:disk1', lun: 1}}}
---
${header('d-bad')}spec: {vmName: vm1, deviceType: lun, source: {hostDevice: {path: /dev/null}}}
`;

let dir: string;
let handle: ServeHandle | undefined;
let engine: DeviceEngine;
let out: string;
let err: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vhba-serve-pt-'));
  await mkdir(join(dir, 'config'));
  await writeFile(join(dir, 'config', 'disks.yaml'), MANIFESTS);
  engine = new DeviceEngine(DEVICES);
  out = '';
  err = '';
  const started = await startServe({
    configPath: join(dir, 'config'), dirs: resolveDirs(join(dir, 's')), logger: silent, engineFactory: () => engine,
    out: (t) => (out += t), err: (t) => (err += t), resyncMs: 0, watch: false,
  });
  if (typeof started === 'number') throw new Error(`startServe exited ${started}: ${err}`);
  handle = started;
});

afterEach(async () => {
  await handle?.stop();
  await rm(dir, { recursive: true, force: true });
});

function attachedSpecs(): LunSpec[] {
  return engine.calls.filter((c) => c.method === 'attachLun').map((c) => c.args[1] as LunSpec);
}

describe('vhba serve: passthrough disks', () => {
  it('attaches each device with its policy and expected identity, no parameters, at its own target', () => {
    const specs = attachedSpecs();
    expect(specs.find((s) => s.target === 1)).toEqual({
      target: 1, lun: 0, backing: { kind: 'hostDevice', path: '/dev/disk/by-id/wwn-0x5000c500abcdef01', policy: { rawio: true, expectedWwn: '5000c500abcdef01' } },
    });
    expect(specs.find((s) => s.target === 2)).toEqual({
      target: 2, lun: 0, backing: { kind: 'iscsi', portal: '127.0.0.1:3260', iqn: 'iqn.2003-01.org.example:disk1', lun: 1, policy: { rawio: false } },
    });
    expect(specs.find((s) => s.target === 0)?.backing.kind).toBe('file');
  });

  it('a device the engine refuses is reported for that disk with the engine\'s message; the others are served', () => {
    const served = engine.list().flatMap((c) => c.luns.map((l) => l.target)).sort();
    expect(served).toEqual([0, 1, 2]);
    expect(err).toContain('vhba serve: attach default/d-bad at vm1/hba0 3:0 failed: /dev/null is not a SCSI device (SG_IO: ENOTTY)');
    expect(out).toMatch(/Not attached \(retried at each pass; fix the device or the manifest\):\n {2}default\/d-bad \(VM vm1\) at 0:3:0: \/dev\/null: \/dev\/null is not a SCSI device/);
    // A by-id link is recommended for a /dev/… name that can change.
    expect(err).toContain('default/d-bad: source.hostDevice.path /dev/null may name another device after a reboot or hotplug; use the device\'s /dev/disk/by-id/ link');
    expect(err).not.toContain('default/b-host: source.hostDevice.path');
  });

  it('the guest view shows the device\'s own identity, geometry and by-id paths (none without a NAA designator)', async () => {
    const view = JSON.parse(await readFile(join(dir, 's', 'vm1', 'disks.json'), 'utf8')) as GuestVm;
    const host = view.disks.find((d) => d.key === 'default/b-host');
    expect(host).toMatchObject({
      serial: 'ZA1B2C3D', wwn: '5000c500abcdef01', sizeBytes: 64 << 20, logicalBlockSize: 4096, physicalBlockSize: 4096,
      guestDevicePaths: ['/dev/disk/by-id/scsi-35000c500abcdef01', '/dev/disk/by-id/wwn-0x5000c500abcdef01'],
      passthrough: { device: { vendor: 'Linux   ', serial: 'ZA1B2C3D' } },
    });
    const iscsi = view.disks.find((d) => d.key === 'default/c-iscsi');
    expect(iscsi).toMatchObject({ serial: 'beaf11', wwn: '', sizeBytes: 32 << 20, logicalBlockSize: 512, guestDevicePaths: [], backingPath: 'iscsi://127.0.0.1:3260/iqn.2003-01.org.example:disk1/1' });
    expect(view.disks.find((d) => d.key === 'default/d-bad')?.passthrough?.attachError).toMatch(/is not a SCSI device/);
    expect(out).toMatch(/default\/b-host \[lun \/dev\/disk\/by-id\/wwn-0x5000c500abcdef01\]\s+hba0 q1\s+0:1:0\s+ZA1B2C3D\s+0x5000c500abcdef01\s+64Mi\s+4096\/4096\s+dev\s+\/dev\/disk\/by-id\/scsi-35000c500abcdef01/);
    expect(out).toMatch(/default\/c-iscsi \[lun iscsi:\/\/127\.0\.0\.1:3260\/iqn\.2003-01\.org\.example:disk1\/1\]\s+hba0 q1\s+0:2:0\s+beaf11\s+\?\s+32Mi\s+512\/512\s+dev\s+\(no NAA designator/);
  });

  it('re-runs converge (passthrough LUNs compared by device and policy, never resized); a policy change replaces the LUN', async () => {
    const before = engine.calls.length;
    const pass = await handle!.loop.reconcile();
    // Only the refused device is tried again.
    expect(pass.execution.applied).toEqual([]);
    expect(engine.calls.slice(before).map((c) => [c.method, (c.args[1] as LunSpec | undefined)?.target])).toEqual([['attachLun', 3]]);
    await writeFile(join(dir, 'config', 'disks.yaml'), MANIFESTS.replace('rawio: true', 'rawio: false'));
    const changed = await handle!.loop.reconcile();
    expect(changed.notices).toContainEqual(expect.stringMatching(/default\/b-host at vm1\/hba0 1:0 is replaced .*rawio true → false/));
    expect(changed.execution.applied.map((a) => a.kind)).toEqual(['detachLun', 'attachLun']);
    expect(engine.calls.filter((c) => c.method === 'resizeLun')).toEqual([]);
  });
});
