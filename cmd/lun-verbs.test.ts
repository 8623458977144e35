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
    await expect(cli(runAttach, ['--engine', address, '--controller', 'x', '--target', '0', '--lun', '0', '--size', '1Mi'])).rejects.toThrow(/exactly one of --file <path> or --memory/);
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
