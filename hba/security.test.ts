// Who may connect (issue 9): peer allow lists, private socket directories,
// per-controller limits, the control API's SO_PEERCRED check over a real unix
// socket, and properties: no path accepted from a request or manifest escapes
// its root.
import * as grpc from '@grpc/grpc-js';
import fc from 'fast-check';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, normalize, relative, resolve, isAbsolute } from 'node:path';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { createClient } from '../protos/grpc.ts';
import { EngineService } from '../protos/gen/vhba/hba/v1/hba_pb.ts';
import { checkPathSyntax } from '../csi/paths.ts';
import { validateVirtualDisk } from '../operator/api/validate.ts';
import { isInside, startControlServer } from './control/server.ts';
import { createEngine } from './engine.ts';
import { native } from './native/index.ts';
import {
  checkControllerShape, checkLunCount, checkSocketDir, DEFAULT_CONTROLLER_LIMITS, defaultPeerPolicy, ensurePrivateDir,
  LimitExceededError, limitMetrics, limitsFromEnv, parsePeerPolicy, peerRejection,
} from './security.ts';

const dir = mkdtempSync(join(tmpdir(), 'vhba-security-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const me = process.getuid!();

describe('peer allow list', () => {
  it('defaults to root and our own uid', () => {
    const p = defaultPeerPolicy();
    expect(peerRejection(p, { pid: 1, uid: 0, gid: 0 })).toBeNull();
    expect(peerRejection(p, { pid: 1, uid: me, gid: 12345 })).toBeNull();
    expect(peerRejection(p, { pid: 7, uid: 65534, gid: 65534 })).toMatch(/pid 7 uid 65534 gid 65534 is not in the allow list/);
  });
  it('parses uid:N,gid:N and rejects anything else', () => {
    const p = parsePeerPolicy('uid:1000, gid:64055');
    expect(peerRejection(p, { pid: 1, uid: 1000, gid: 1 })).toBeNull();
    expect(peerRejection(p, { pid: 1, uid: 5, gid: 64055 })).toBeNull();
    expect(peerRejection(p, { pid: 1, uid: 0, gid: 0 })).not.toBeNull(); // an explicit list replaces the default
    for (const bad of ['root', 'uid:-1', 'uid:', 'pid:3', 'uid:99999999999']) expect(() => parsePeerPolicy(bad)).toThrow(/expected uid:N or gid:N/);
  });
});

describe('socket directories', () => {
  it('ensurePrivateDir creates 0700 and tightens a directory we own', () => {
    const d = join(dir, 'private', 'sockets');
    ensurePrivateDir(d);
    expect(statSync(d).mode & 0o777).toBe(0o700);
    chmodSync(d, 0o777);
    ensurePrivateDir(d);
    expect(statSync(d).mode & 0o777).toBe(0o700);
  });
  it('refuses a symlink and a group/other-writable directory', () => {
    const real = join(dir, 'real');
    mkdirSync(real, { mode: 0o700 });
    const link = join(dir, 'link');
    symlinkSync(real, link);
    expect(() => ensurePrivateDir(link)).toThrow(/not a directory/);
    expect(() => checkSocketDir(link)).toThrow(/not a directory/);
    const open = join(dir, 'open');
    mkdirSync(open);
    chmodSync(open, 0o777);
    expect(() => checkSocketDir(open)).toThrow(/group or others may write it/);
    chmodSync(open, 0o750);
    expect(() => checkSocketDir(open)).not.toThrow();
  });
});

describe('per-controller limits', () => {
  it('errors name the limit, the request and the maximum; metrics expose them', () => {
    const l = DEFAULT_CONTROLLER_LIMITS;
    expect(() => checkControllerShape(l, { numRequestQueues: l.maxRequestQueues + 1, maxQueueSize: 128 })).toThrow(`limit maxRequestQueues exceeded: requested ${l.maxRequestQueues + 1}, at most ${l.maxRequestQueues} per controller`);
    expect(() => checkControllerShape(l, { numRequestQueues: 1, maxQueueSize: 4096 })).toThrow(LimitExceededError);
    expect(() => checkLunCount(l, l.maxLuns - 1)).not.toThrow();
    expect(() => checkLunCount(l, l.maxLuns)).toThrow(/limit maxLuns exceeded/);
    expect(limitMetrics(l).vhba_controller_limit_in_flight).toBe((l.maxRequestQueues + 2) * l.maxQueueSize);
    expect(limitsFromEnv({ VHBA_LIMIT_LUNS: '2' }).maxLuns).toBe(2);
    expect(() => limitsFromEnv({ VHBA_LIMIT_LUNS: '0' })).toThrow(/positive integer/);
  });
});

describe('control API: SO_PEERCRED and limits over a real socket', () => {
  const logger = pino({ level: 'silent' });
  it.skipIf(typeof native.peerCredentialsOfFd !== 'function')('serves an allowed peer, refuses one not in the list', async () => {
    const engine = createEngine(logger);
    const allowed = await startControlServer(engine, join(dir, 'ctl-a', 'engine.sock'), logger, { peerPolicy: { uids: new Set([me]), gids: new Set() }, limits: { ...DEFAULT_CONTROLLER_LIMITS, maxRequestQueues: 2, maxLuns: 1 } });
    const denied = await startControlServer(engine, join(dir, 'ctl-d', 'engine.sock'), logger, { peerPolicy: { uids: new Set([me + 4242]), gids: new Set([4242]) } });
    expect(statSync(join(dir, 'ctl-a', 'engine.sock')).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'ctl-a')).mode & 0o777).toBe(0o700);
    const ok = createClient(EngineService, allowed.address);
    const no = createClient(EngineService, denied.address);
    try {
      expect((await ok.getInfo({})).ready).toBe(true);
      const err = await no.getInfo({}, { deadlineMs: 3000 }).then(() => null, (e: grpc.ServiceError) => e);
      expect(err?.code).toBe(grpc.status.UNAVAILABLE);
      // Limits through the API: RESOURCE_EXHAUSTED naming the limit.
      const tooMany = await ok.createController({ id: 'vm/big', socketPath: join(dir, 'vm', 'big.sock'), numRequestQueues: 3 }).then(() => null, (e: grpc.ServiceError) => e);
      expect(tooMany?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
      expect(tooMany?.details).toMatch(/limit maxRequestQueues exceeded: requested 3, at most 2/);
      await ok.createController({ id: 'vm/h', socketPath: join(dir, 'vm', 'h.sock'), numRequestQueues: 1 });
      const lun = (n: number) => ({ controllerId: 'vm/h', address: { target: 0, lun: n }, backing: { case: 'memory' as const, value: {} }, parameters: { sizeBytes: 1n << 20n, logicalBlockSize: 512, physicalBlockSize: 4096, serial: `S${n}`, wwn: `500000000000000${n}`, readOnly: false, product: '' } });
      await ok.attachLun(lun(0));
      const second = await ok.attachLun(lun(1)).then(() => null, (e: grpc.ServiceError) => e);
      expect(second?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
      expect(second?.details).toMatch(/limit maxLuns exceeded: requested 2, at most 1/);
    } finally {
      ok.close();
      no.close();
      await allowed.close();
      await denied.close();
      await engine.close();
    }
  }, 30_000);
});

describe('paths cannot escape their roots (properties)', () => {
  const segment = fc.oneof(fc.constantFrom('..', '.', '', 'a', 'b', '...', '..a', 'root'), fc.string({ maxLength: 4 }).filter((s) => !s.includes('/') && !s.includes('\0')));
  const pathArb = fc.tuple(fc.boolean(), fc.array(segment, { maxLength: 8 })).map(([abs, segs]) => (abs ? '/' : '') + segs.join('/'));
  it('control API socket_path: isInside never lets a path out of the root', () => {
    fc.assert(fc.property(pathArb, (p) => {
      const root = '/run/vhba/sockets';
      const candidate = isAbsolute(p) ? p : `${root}/${p}`;
      if (isInside(root, candidate)) {
        const rel = relative(root, resolve(candidate));
        expect(rel === '..' || rel.startsWith('../') || isAbsolute(rel) || rel === '').toBe(false);
      }
    }), { numRuns: 3000 });
  });
  it('CSI paths: an accepted path is normalized and strictly below the root', () => {
    fc.assert(fc.property(pathArb, (p) => {
      const root = '/var/lib/kubelet/pods';
      let out: string;
      try { out = checkPathSyntax(`${root}/${p}`, 'target_path', root); } catch { return; }
      expect(out).toBe(normalize(out));
      expect(out.startsWith(`${root}/`)).toBe(true);
      expect(relative(root, out).split('/')).not.toContain('..');
    }), { numRuns: 3000 });
  });
  it('VirtualDisk manifests: an accepted relative file path stays inside the data directory', () => {
    fc.assert(fc.property(pathArb, (p) => {
      const res = validateVirtualDisk({ apiVersion: 'vhba.io/v1alpha1', kind: 'VirtualDisk', metadata: { name: 'd1' }, spec: { vmName: 'vm1', capacity: '256Mi', source: { file: { path: p } } } });
      if (!res.ok || p.startsWith('/')) return; // absolute file paths are taken as given (docs/security.md)
      const dataDir = '/var/lib/vhba/data';
      const rel = relative(dataDir, resolve(dataDir, p));
      expect(rel.startsWith('..') && (rel === '..' || rel.startsWith('../'))).toBe(false);
    }), { numRuns: 3000 });
  });
});
