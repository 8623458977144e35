import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { LunSpec } from '../hba/engine-api.ts';
import { startServe, type ServeHandle } from './serve.ts';
import { MemoryEngine } from './testing/memory-engine.ts';
import { resolveDirs, type GuestVm } from './topology.ts';

const examples = new URL('../examples', import.meta.url).pathname;
const silent = pino({ level: 'silent' });

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vhba-serve-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function serve(config: string, engine = new MemoryEngine()) {
  let out = '';
  let err = '';
  const started = await startServe({
    configPath: config,
    dirs: resolveDirs(join(dir, 'sockets')),
    logger: silent,
    engineFactory: () => engine,
    out: (t) => (out += t),
    err: (t) => (err += t),
  });
  return { started, engine, out: () => out, err: () => err };
}

function attached(engine: MemoryEngine): Record<string, string> {
  const map: Record<string, string> = {};
  for (const call of engine.calls.filter((c) => c.method === 'attachLun')) {
    const [controllerId, spec] = call.args as [string, LunSpec];
    map[spec.backing.kind === 'file' ? spec.backing.path.split('/').pop() ?? '' : ''] = `${controllerId}@${spec.target}:${spec.lun}`;
  }
  return map;
}

describe('startServe on the examples', () => {
  it('creates one controller per VM controller and attaches every disk at its planned address', async () => {
    const { started, engine, out } = await serve(examples);
    expect(typeof started).not.toBe('number');
    const handle = started as ServeHandle;
    const sockets = join(dir, 'sockets');
    expect(engine.calls.filter((c) => c.method === 'createController').map((c) => c.args[0])).toEqual([
      { id: 'demo/hba0', socketPath: join(sockets, 'demo', 'hba0.sock'), numRequestQueues: 1 },
      { id: 'demo/hba1', socketPath: join(sockets, 'demo', 'hba1.sock'), numRequestQueues: 2 },
    ]);
    expect(attached(engine)).toEqual({
      '4k.img': 'demo/hba0@0:0', 'data.img': 'demo/hba0@1:0', 'data-far.img': 'demo/hba0@1:300',
      'readonly.img': 'demo/hba0@2:0', 'system.img': 'demo/hba0@3:0', 'dedicated.img': 'demo/hba1@0:0',
    });
    const specs = engine.calls.filter((c) => c.method === 'attachLun').map((c) => c.args[1] as LunSpec);
    const data = specs.find((s) => s.target === 1 && s.lun === 0);
    expect(data).toMatchObject({
      backing: { kind: 'file', path: join(sockets, '.state', 'data', 'demo', 'data.img'), sizeBytes: 128 * 2 ** 20 },
      params: { serial: 'DEMO-DATA-0001', wwn: '3000000000000d01', readOnly: false, logicalBlockSize: 512, physicalBlockSize: 4096 },
    });
    expect(specs.find((s) => s.backing.kind === 'file' && s.backing.path.endsWith('4k.img'))?.params?.logicalBlockSize).toBe(4096);
    expect(specs.find((s) => s.backing.kind === 'file' && s.backing.path.endsWith('readonly.img'))?.params?.readOnly).toBe(true);

    // disks.json: the predicted guest view.
    const view = JSON.parse(await readFile(join(sockets, 'demo', 'disks.json'), 'utf8')) as GuestVm;
    expect(view.disks).toHaveLength(6);
    const far = view.disks.find((d) => d.lun === 300);
    expect(far?.guestDevicePaths).toEqual([`/dev/disk/by-id/scsi-3${far?.wwn}`, `/dev/disk/by-id/wwn-0x${far?.wwn}`]);
    // The table shows every disk with its C:T:L.
    expect(out()).toMatch(/default\/demo-data-far\s+hba0 q1\s+0:1:300\s+VH[A-Z2-7]{18}/);
    expect(out()).toMatch(/default\/demo-dedicated\s+hba1 q2\s+1:0:0/);

    await handle.stop();
    expect(engine.closed).toBe(true);
  });

  it('keeps addresses across restarts when a disk that sorts first is added', async () => {
    const config = join(dir, 'config');
    await cp(examples, config, { recursive: true });
    const first = await serve(config);
    await (first.started as ServeHandle).stop();
    await writeFile(join(config, 'aaa.yaml'), `apiVersion: vhba.io/v1alpha1
kind: VirtualDisk
metadata: {name: demo-0-new}
spec: {vmName: demo, capacity: 64Mi, source: {file: {path: demo/new.img}}}
`);
    const second = await serve(config);
    await (second.started as ServeHandle).stop();
    const before = attached(first.engine);
    const after = attached(second.engine);
    for (const [file, address] of Object.entries(before)) expect(after[file]).toBe(address);
    expect(after['new.img']).toBe('demo/hba0@4:0');
    const state = JSON.parse(await readFile(join(dir, 'sockets', '.state', 'assignments.json'), 'utf8'));
    expect(state.assignments).toHaveLength(7);
  });

  it('exits 2 on invalid manifests, naming file and field, without starting the engine', async () => {
    const config = join(dir, 'bad.yaml');
    await writeFile(config, 'apiVersion: vhba.io/v1alpha1\nkind: VirtualDisk\nmetadata: {name: x}\nspec: {vmName: demo, capacity: 1Gi, logicalBlockSize: 1024, source: {file: {path: x.img}}}\n');
    const engine = new MemoryEngine();
    const run = await serve(config, engine);
    expect(run.started).toBe(2);
    expect(run.err()).toContain(`${config} (document 1): spec.logicalBlockSize: 1024 is not allowed; allowed: 512, 4096`);
    expect(engine.calls).toEqual([]);
  });

  it('reports unsupported sources and planner refusals, and serves the rest', async () => {
    const config = join(dir, 'mixed.yaml');
    await writeFile(config, `apiVersion: vhba.io/v1alpha1
kind: VirtualDisk
metadata: {name: pvc-disk}
spec: {vmName: demo, capacity: 64Mi, source: {pvc: {claimName: c1}}}
---
apiVersion: vhba.io/v1alpha1
kind: VirtualDisk
metadata: {name: a}
spec: {vmName: demo, capacity: 64Mi, source: {file: {path: a.img}}, address: {target: 1, lun: 0}}
---
apiVersion: vhba.io/v1alpha1
kind: VirtualDisk
metadata: {name: b}
spec: {vmName: demo, capacity: 64Mi, source: {file: {path: /tmp/b.img}}, address: {target: 1, lun: 0}}
`);
    const run = await serve(config);
    const handle = run.started as ServeHandle;
    expect(handle.topology.skipped.map((s) => [s.key, s.reason])).toEqual([['default/pvc-disk', 'Unsupported'], ['default/b', 'AddressConflict']]);
    expect(run.out()).toContain('default/b (VM demo): AddressConflict: address 0:1:0 is already used by default/a');
    expect(attached(run.engine)).toEqual({ 'a.img': 'demo/hba0@1:0' });
    await handle.stop();
  });

  it('exits 1 and closes the engine when the engine fails', async () => {
    const engine = new MemoryEngine();
    engine.failOn = 'attachLun';
    const run = await serve(examples, engine);
    expect(run.started).toBe(1);
    expect(run.err()).toContain('injected failure in attachLun');
    expect(engine.closed).toBe(true);
  });
});
