// `vhba serve` following its directory, over the real control API (gRPC on a
// unix socket) with an in-memory engine behind it.
import { mkdtemp, rename, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { LunSpec } from '../hba/engine-api.ts';
import { startServe, type ServeHandle } from './serve.ts';
import { MemoryEngine } from './testing/memory-engine.ts';
import { resolveDirs } from './topology.ts';

const silent = pino({ level: 'silent' });
let dir: string;
let config: string;
let engine: MemoryEngine;
let handle: ServeHandle;
let out: string;
let err: string;

function manifest(name: string, capacity: string, extra = ''): string {
  return `apiVersion: vhba.io/v1alpha1\nkind: VirtualDisk\nmetadata: {name: ${name}}\nspec: {vmName: vm1, capacity: ${capacity}, source: {file: {path: vm1/${name}.img}}${extra}}\n`;
}

/** Writes a manifest the way a careful tool does: a temp file renamed over. */
async function put(name: string, text: string): Promise<void> {
  await writeFile(join(config, `.${name}.tmp`), text);
  await rename(join(config, `.${name}.tmp`), join(config, name));
}

/** The capacity of an emulated LUN (file or memory backing). */
function sizeOf(spec: LunSpec): number {
  if (spec.backing.kind !== 'file' && spec.backing.kind !== 'memory') throw new Error(`LUN ${spec.target}:${spec.lun} is ${spec.backing.kind}, not emulated`);
  return spec.backing.sizeBytes;
}

function luns(): LunSpec[] {
  return engine.list().flatMap((c) => c.luns);
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vhba-serve-loop-'));
  config = join(dir, 'config');
  await (await import('node:fs/promises')).mkdir(config);
  await writeFile(join(config, 'a.yaml'), manifest('a', '64Mi'));
  engine = new MemoryEngine();
  out = '';
  err = '';
  const started = await startServe({
    configPath: config, dirs: resolveDirs(join(dir, 's')), logger: silent, engineFactory: () => engine,
    out: (t) => (out += t), err: (t) => (err += t), debounceMs: 30, resyncMs: 0,
  });
  if (typeof started === 'number') throw new Error(`startServe: ${started} ${err}`);
  handle = started;
});

afterEach(async () => {
  await handle.stop();
  await rm(dir, { recursive: true, force: true });
});

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out; err: ${err}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('serve follows its directory', () => {
  it('hotplugs added manifests and unplugs deleted ones, on file events alone', async () => {
    expect(luns().map((l) => [l.target, l.lun])).toEqual([[0, 0]]);
    await writeFile(join(config, 'b.yaml'), manifest('b', '32Mi'));
    await writeFile(join(config, 'c.yaml'), manifest('c', '32Mi'));
    await until(() => luns().length === 3 && out.includes('attach default/c'));
    expect(luns().map((l) => l.target).sort()).toEqual([0, 1, 2]);
    expect(out).toMatch(/attach default\/b at vm1\/hba0 1:0: \/dev\/disk\/by-id\/scsi-3[0-9a-f]{16}/);
    await unlink(join(config, 'b.yaml'));
    await until(() => luns().length === 2);
    expect(engine.calls.filter((c) => c.method === 'detachLun').map((c) => c.args)).toEqual([['vm1/hba0', 1, 0]]);
    // The control API answered every change: the controller was created once.
    expect(engine.calls.filter((c) => c.method === 'createController')).toHaveLength(1);
  });

  it('grows on a larger capacity and refuses to shrink', async () => {
    await put('a.yaml', manifest('a', '128Mi'));
    await handle.loop.reconcile();
    expect(sizeOf(luns()[0]!)).toBe(128 << 20);
    await put('a.yaml', manifest('a', '16Mi'));
    const pass = await handle.loop.reconcile();
    expect(pass.notices[0]).toMatch(/default\/a: spec.capacity 16777216 bytes is smaller than the running disk's 134217728 bytes; shrinking is refused/);
    expect(sizeOf(luns()[0]!)).toBe(128 << 20);
    expect(err).toContain('shrinking is refused');
  });

  it('an invalid edit names file and field and leaves the running disk untouched', async () => {
    const before = structuredClone(luns());
    await put('a.yaml', manifest('a', '128Mi', ', logicalBlockSize: 1024'));
    const pass = await handle.loop.reconcile();
    expect(pass.loadErrors).toEqual([`${join(config, 'a.yaml')} (document 1): spec.logicalBlockSize: 1024 is not allowed; allowed: 512, 4096`]);
    expect(err).toContain(`${join(config, 'a.yaml')} is invalid: its disks keep running as they were`);
    expect(pass.execution.applied).toEqual([]);
    expect(luns()).toEqual(before);
    // Broken YAML too.
    await put('a.yaml', 'spec: [unclosed');
    expect((await handle.loop.reconcile()).execution.applied).toEqual([]);
    expect(luns()).toEqual(before);
    // An emptied file (an editor rewriting it in place) keeps its disks too.
    await writeFile(join(config, 'a.yaml'), '');
    expect((await handle.loop.reconcile()).execution.applied).toEqual([]);
    expect(luns()).toEqual(before);
    // Fixed: the pending change applies.
    await put('a.yaml', manifest('a', '128Mi'));
    await handle.loop.reconcile();
    expect(sizeOf(luns()[0]!)).toBe(128 << 20);
    expect(err).toContain('the manifests are valid again');
  });

  it('re-runs converge: a resync with no change does nothing', async () => {
    const calls = engine.calls.length;
    const pass = await handle.loop.reconcile();
    expect(pass.execution.applied).toEqual([]);
    expect(engine.calls.length).toBe(calls);
  });
});
