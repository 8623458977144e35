// vhba attach|detach|resize|ls against a real engine and control API.
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startControlServer, type ControlServer } from '../hba/control/server.ts';
import { createEngine, type VhbaEngineInstance } from '../hba/engine.ts';
import { UsageError } from './args.ts';
import { engineAddress } from './engine-client.ts';
import { runLs, type LsController } from './ls.ts';
import { runAttach, runDetach, runResize } from './lun-verbs.ts';
import { DeviceEngine, deviceIdentity } from './testing/device-engine.ts';

let dir: string;
let engine: VhbaEngineInstance;
let server: ControlServer;
let address: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vhba-verbs-'));
  engine = createEngine(pino({ level: 'silent' }));
  server = await startControlServer(engine, join(dir, 'engine.sock'), undefined, { socketRoot: join(dir, 'sockets') });
  address = server.address;
});

afterAll(async () => {
  await server.close();
  await engine.close();
  await rm(dir, { recursive: true, force: true });
});

async function cli(run: (argv: string[], out: (t: string) => void, err: (t: string) => void) => Promise<number>, argv: string[]) {
  let out = '';
  let err = '';
  const code = await run(argv, (t) => (out += t), (t) => (err += t));
  return { code, out, err };
}

describe('vhba attach / ls / resize / detach', () => {
  it('attach creates the controller and the LUN; ls shows address, identity, guest paths and counters', async () => {
    const file = join(dir, 'disk.img');
    const args = ['--engine', address, '--controller', 'vm1/hba0', '--target', '2', '--lun', '300', '--file', file, '--size', '8Mi', '--create-socket', join(dir, 'sockets', 'vm1', 'hba0.sock')];
    const first = await cli(runAttach, args);
    expect(first.err).toBe('');
    expect(first.code).toBe(0);
    expect(first.out).toMatch(/attached vm1\/hba0 target 2 lun 300: serial VH[A-Z2-7]{18}, wwn 0x3[0-9a-f]{15}; guest paths \/dev\/disk\/by-id\/scsi-3/);
    expect((await cli(runAttach, args)).code).toBe(0); // idempotent
    expect((await stat(file)).size).toBe(8 << 20);

    const table = await cli(runLs, ['--engine', address]);
    expect(table.code).toBe(0);
    expect(table.out).toMatch(/vm1\/hba0 .* not connected {2}1 request queue/);
    expect(table.out).toMatch(/0:2:300 +8Mi +512\/4096 +no +VH[A-Z2-7]{18} +0x3[0-9a-f]{15} +0 +0 +0 +0 +.*disk\.img +\/dev\/disk\/by-id\/scsi-3/);
    const json = JSON.parse((await cli(runLs, ['--engine', address, '--json'])).out) as { controllers: LsController[] };
    expect(json.controllers[0]!.luns[0]).toMatchObject({ address: '0:2:300', target: 2, lun: 300, sizeBytes: 8 << 20, reads: 0, writes: 0 });
    expect(json.controllers[0]!.luns[0]!.guestDevicePaths).toHaveLength(2);
  });

  it('attach with other parameters at a taken address fails with ALREADY_EXISTS and exit 1', async () => {
    const r = await cli(runAttach, ['--engine', address, '--controller', 'vm1/hba0', '--target', '2', '--lun', '300', '--memory', '--size', '8Mi']);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^vhba attach: ALREADY_EXISTS: .*attached with other parameters/);
  });

  it('resize grows, refuses to shrink', async () => {
    const base = ['--engine', address, '--controller', 'vm1/hba0', '--target', '2', '--lun', '300'];
    expect((await cli(runResize, [...base, '--size', '16Mi'])).code).toBe(0);
    const shrink = await cli(runResize, [...base, '--size', '4Mi']);
    expect(shrink.code).toBe(1);
    expect(shrink.err).toMatch(/FAILED_PRECONDITION: .*shrinking from 16777216 to 4194304 bytes/);
  });

  it('detach removes it; detaching again is fine', async () => {
    const base = ['--engine', address, '--controller', 'vm1/hba0', '--target', '2', '--lun', '300'];
    expect((await cli(runDetach, base)).code).toBe(0);
    expect((await cli(runDetach, base)).code).toBe(0);
    expect((await cli(runLs, ['--engine', address])).out).toContain('(no LUNs)');
  });

  it('says what to do when no engine answers, and refuses bad flags', async () => {
    const r = await cli(runLs, ['--engine', `unix://${join(dir, 'nobody.sock')}`]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/no engine answers at unix:\/\/.*nobody\.sock .*start one with 'vhba engine' or 'vhba serve'/);
    await expect(cli(runAttach, ['--engine', address, '--controller', 'x', '--target', '256', '--lun', '0', '--memory', '--size', '1Mi'])).rejects.toThrow(/--target "256" is not allowed; allowed: an integer 0–255/);
    await expect(cli(runAttach, ['--engine', address, '--controller', 'x', '--target', '0', '--lun', '0', '--size', '1Mi'])).rejects.toThrow(/exactly one of --file <path>, --memory, --host-device <path> or --iscsi-portal\/--iscsi-iqn\/--iscsi-lun/);
    await expect(cli(runResize, ['--engine', address, '--controller', 'x', '--target', '0', '--lun', '0', '--size', 'lots'])).rejects.toThrow(UsageError);
    expect(() => engineAddress('ls', 'relative.sock')).toThrow(/not a unix socket address/);
    expect(engineAddress('ls', undefined, { VHBA_ENGINE: '/x/e.sock' })).toBe('unix:///x/e.sock');
    expect(engineAddress('ls', undefined, {})).toBe('unix:///run/vhba/engine.sock');
  });

  it('the engine refuses controller sockets outside its socket directory', async () => {
    const r = await cli(runAttach, ['--engine', address, '--controller', 'vm2/hba0', '--target', '0', '--lun', '0', '--memory', '--size', '1Mi', '--create-socket', join(dir, 'elsewhere.sock')]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/INVALID_ARGUMENT: socket_path .* must be inside the engine's socket directory/);
  });
});

describe('vhba attach: passthrough LUNs', () => {
  let ptDir: string;
  let ptEngine: DeviceEngine;
  let ptServer: ControlServer;
  const base = () => ['--engine', ptServer.address, '--controller', 'vm1/hba0', '--target', '1', '--lun', '0'];

  beforeAll(async () => {
    ptDir = await mkdtemp(join(tmpdir(), 'vhba-verbs-pt-'));
    // The device double answers like the engine after its probe (hba/engine.ts is exercised over real devices in test/e2e/passthrough-*).
    ptEngine = new DeviceEngine({
      '/dev/disk/by-id/wwn-0x5000c500abcdef01': deviceIdentity({ vendor: 'ATA     ', product: 'ST4000NM0035    ', revision: 'TN04', serial: 'ZC1ABCDE', wwn: '5000c500abcdef01', sizeBytes: 4000787030016, logicalBlockSize: 512, physicalBlockSize: 4096 }),
      'iscsi://192.0.2.10:3260/iqn.2003-01.org.example:disk1/2': deviceIdentity({ vendor: 'IET     ', product: 'VIRTUAL-DISK    ', revision: '0001', serial: 'beaf12', wwn: '' }),
    });
    ptServer = await startControlServer(ptEngine, join(ptDir, 'engine.sock'), undefined, { socketRoot: join(ptDir, 'sockets') });
    await ptEngine.createController({ id: 'vm1/hba0', socketPath: join(ptDir, 'sockets', 'vm1', 'hba0.sock') });
  });

  afterAll(async () => {
    await ptServer.close();
    await rm(ptDir, { recursive: true, force: true });
  });

  it('--host-device attaches with the policy and prints the identity the engine returns; ls shows the device', async () => {
    const r = await cli(runAttach, [...base(), '--host-device', '/dev/disk/by-id/wwn-0x5000c500abcdef01', '--rawio', '--timeout-ms', '5000', '--expect-wwn', '0x5000C500ABCDEF01', '--expect-serial', 'ZC1ABCDE']);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toBe('attached vm1/hba0 target 1 lun 0: /dev/disk/by-id/wwn-0x5000c500abcdef01: ATA ST4000NM0035 TN04, serial ZC1ABCDE, wwn 0x5000c500abcdef01, 4000787030016 bytes, 512/4096-byte blocks; guest paths /dev/disk/by-id/scsi-35000c500abcdef01 /dev/disk/by-id/wwn-0x5000c500abcdef01\n');
    const [, spec] = ptEngine.calls.filter((c) => c.method === 'attachLun').at(-1)!.args as [string, unknown];
    expect(spec).toEqual({ target: 1, lun: 0, backing: { kind: 'hostDevice', path: '/dev/disk/by-id/wwn-0x5000c500abcdef01', policy: { rawio: true, timeoutMs: 5000, expectedWwn: '5000c500abcdef01', expectedSerial: 'ZC1ABCDE' } } });
    const table = await cli(runLs, ['--engine', ptServer.address]);
    expect(table.out).toMatch(/0:1:0 +3907018584Ki +512\/4096 +dev rawio +ZC1ABCDE +0x5000c500abcdef01 +0 +0 +0 +0 +\/dev\/disk\/by-id\/wwn-0x5000c500abcdef01 +\/dev\/disk\/by-id\/scsi-35000c500abcdef01/);
    const json = JSON.parse((await cli(runLs, ['--engine', ptServer.address, '--json'])).out) as { controllers: LsController[] };
    expect(json.controllers[0]!.luns[0]!.passthrough).toMatchObject({ kind: 'hostDevice', policy: { rawio: true, timeoutMs: 5000 }, device: { serial: 'ZC1ABCDE', logicalBlockSize: 512 } });
  });

  it('--iscsi-* attaches (default port 3260) and says when the device has no NAA designator', async () => {
    const r = await cli(runAttach, [...base().slice(0, 4), '--target', '2', '--lun', '0', '--iscsi-portal', '192.0.2.10', '--iscsi-iqn', 'iqn.2003-01.org.example:disk1', '--iscsi-lun', '2', '--initiator-name', 'iqn.2026-11.io.vhba:node1']);
    expect(r.err).toBe('');
    expect(r.out).toMatch(/^attached vm1\/hba0 target 2 lun 0: iscsi:\/\/192\.0\.2\.10:3260\/iqn\.2003-01\.org\.example:disk1\/2 as iqn\.2026-11\.io\.vhba:node1: IET VIRTUAL-DISK 0001, serial beaf12, wwn \(none: no NAA designator\), .*guest paths from the device's other designators/);
    const [, spec] = ptEngine.calls.filter((c) => c.method === 'attachLun').at(-1)!.args as [string, unknown];
    expect(spec).toMatchObject({ backing: { kind: 'iscsi', portal: '192.0.2.10:3260', iqn: 'iqn.2003-01.org.example:disk1', lun: 2, initiatorName: 'iqn.2026-11.io.vhba:node1', policy: { rawio: false } } });
  });

  it('reports the engine\'s refusal of a device with exit 1', async () => {
    const r = await cli(runAttach, [...base().slice(0, 4), '--target', '3', '--lun', '0', '--host-device', '/dev/null']);
    expect(r.code).toBe(1);
    expect(r.err).toBe('vhba attach: FAILED_PRECONDITION: /dev/null is not a SCSI device (SG_IO: ENOTTY); give a SCSI disk\'s /dev/disk/by-id/ link or its /dev/sg* node\n');
  });

  it('refuses mixed or malformed flags with a usage error (exit 2) saying what to fix', async () => {
    const usage = (extra: string[]) => cli(runAttach, [...base(), ...extra]);
    await expect(usage(['--host-device', '/dev/sdb', '--size', '1Gi'])).rejects.toThrow(/--size is the device's own for a passthrough LUN .*leave it out, or use --expect-wwn\/--expect-serial/);
    await expect(usage(['--host-device', '/dev/sdb', '--read-only', '--logical-block-size', '4096'])).rejects.toThrow(/--logical-block-size, --read-only are the device's own/);
    await expect(usage(['--memory', '--size', '1Mi', '--rawio'])).rejects.toThrow(/--rawio applies to a passthrough LUN \(--host-device or --iscsi-\*\) only/);
    await expect(usage(['--host-device', '/dev/sdb', '--iscsi-portal', 'h'])).rejects.toThrow(/exactly one of/);
    await expect(usage(['--iscsi-portal', 'h', '--iscsi-lun', '0'])).rejects.toThrow(/missing required flag --iscsi-iqn/);
    await expect(usage(['--iscsi-portal', 'h:99999', '--iscsi-iqn', 'iqn.2003-01.org.example', '--iscsi-lun', '0'])).rejects.toThrow(/--iscsi-portal "h:99999" is not allowed; allowed: host:port \(port 1–65535\)/);
    await expect(usage(['--iscsi-portal', 'h', '--iscsi-iqn', 'disk1', '--iscsi-lun', '0'])).rejects.toThrow(/--iscsi-iqn "disk1" is not an iSCSI name; allowed: iqn\.YYYY-MM/);
    await expect(usage(['--iscsi-portal', 'h', '--iscsi-iqn', 'iqn.2003-01.org.example', '--iscsi-lun', '16384'])).rejects.toThrow(/--iscsi-lun "16384" is not allowed; allowed: an integer 0–16383/);
    await expect(usage(['--host-device', '/dev/sdb', '--timeout-ms', '0'])).rejects.toThrow(/--timeout-ms "0" is not allowed; allowed: milliseconds from 1 to 3600000/);
    await expect(usage(['--host-device', '/dev/sdb', '--expect-wwn', '1234'])).rejects.toThrow(/--expect-wwn "1234" is not a NAA WWN/);
    await expect(usage(['--host-device', '/dev/sdb', '--expect-serial', ' x'])).rejects.toThrow(/--expect-serial " x" is not allowed/);
    await expect(usage(['--host-device', '/dev/sdb', '--iscsi-foo'])).rejects.toThrow(UsageError);
    expect((await cli(runAttach, ['--help'])).out).toMatch(/--host-device <path>.*\n[\s\S]*--iscsi-portal <host\[:port\]>[\s\S]*--expect-serial <text>/);
  });
});
