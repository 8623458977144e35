// Socket ownership for KubeVirt (issue 7/9): `vhba engine --socket-owner
// 107:107` hands each VM's socket directory and vhost-user socket to QEMU's
// uid in virt-launcher. Real engine, real native listener, real chown (the
// tests run as root; skipped otherwise) and a real connect() as uid 107.
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, lstatSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { socketOwnershipFromFlags } from '../cmd/engine.ts';
import { UsageError } from '../cmd/args.ts';
import { createEngine } from './engine.ts';
import { checkSocketDir, claimSocketDir, parseSocketMode, parseSocketOwner, socketDirMode } from './security.ts';

const logger = pino({ level: 'silent' });
const isRoot = process.getuid?.() === 0;
const root = mkdtempSync(join(tmpdir(), 'vhba-socket-owner-'));
chmodSync(root, 0o711); // uid 107 may traverse to the per-VM directories, not list them
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** Whether a process running as uid:gid can connect() to the unix socket. */
function canConnectAs(uid: number, gid: number, socketPath: string): boolean {
  const script = `const s=require('node:net').connect(${JSON.stringify(socketPath)});s.on('connect',()=>{s.destroy();process.exit(0)});s.on('error',(e)=>{console.error(e.code);process.exit(3)});`;
  const r = spawnSync(process.execPath, ['-e', script], { uid, gid, timeout: 10_000, encoding: 'utf8' });
  return r.status === 0;
}

describe('parsing --socket-owner and --socket-mode', () => {
  it('accepts UID and UID:GID, 0600 and 0660; refuses the rest', () => {
    expect(parseSocketOwner('107')).toEqual({ uid: 107, gid: 107 });
    expect(parseSocketOwner('107:36')).toEqual({ uid: 107, gid: 36 });
    for (const bad of ['qemu', '107:', ':107', '-1', '107:107:1', '4294967295', '99999999999']) expect(() => parseSocketOwner(bad)).toThrow(/expected UID or UID:GID/);
    expect(parseSocketMode('0600')).toBe(0o600);
    expect(parseSocketMode('0660')).toBe(0o660);
    for (const bad of ['0666', '0777', '600x', '']) expect(() => parseSocketMode(bad)).toThrow(/expected 0600 or 0660/);
    expect(socketDirMode(0o600)).toBe(0o700);
    expect(socketDirMode(0o660)).toBe(0o750);
    expect(socketOwnershipFromFlags(undefined, '0600')).toBeUndefined();
    expect(socketOwnershipFromFlags('107:107', '0660')).toEqual({ uid: 107, gid: 107, mode: 0o660 });
    expect(() => socketOwnershipFromFlags('qemu', '0600')).toThrow(UsageError);
    expect(() => socketOwnershipFromFlags('107', '0644')).toThrow(UsageError);
  });
});

describe.skipIf(!isRoot)('socket directories handed to the socket owner', () => {
  it('claimSocketDir chowns to the owner with 0700 or 0750; checkSocketDir accepts only that extra owner', () => {
    const d = join(root, 'claim');
    mkdirSync(d, { mode: 0o755 });
    claimSocketDir(d, { uid: 107, gid: 107, mode: 0o600 });
    let st = lstatSync(d);
    expect([st.uid, st.gid, st.mode & 0o777]).toEqual([107, 107, 0o700]);
    claimSocketDir(d, { uid: 107, gid: 108, mode: 0o660 }); // already the owner's: claimed again
    st = lstatSync(d);
    expect([st.uid, st.gid, st.mode & 0o777]).toEqual([107, 108, 0o750]);
    expect(() => checkSocketDir(d)).toThrow(/owned by uid 107, not by us \(0\), root$/);
    expect(() => checkSocketDir(d, 107)).not.toThrow();
    expect(() => checkSocketDir(d, 108)).toThrow(/or the socket owner \(108\)/);
    // Someone else's directory, or a symlink, is not taken over.
    const other = join(root, 'other');
    mkdirSync(other, { mode: 0o700 });
    chownSync(other, 4242, 4242);
    expect(() => claimSocketDir(other, { uid: 107, gid: 107, mode: 0o600 })).toThrow(/owned by uid 4242/);
    expect(lstatSync(other).uid).toBe(4242);
    const link = join(root, 'link');
    symlinkSync(d, link);
    expect(() => claimSocketDir(link, { uid: 107, gid: 107, mode: 0o600 })).toThrow(/not a directory/);
  });

  it('an engine with socketOwner 107:107 serves a socket uid 107 can connect to, and uid 4242 cannot', async () => {
    const engine = createEngine(logger, { socketOwner: { uid: 107, gid: 107, mode: 0o600 } });
    try {
      const socketPath = join(root, 'vm1', 'hba0.sock');
      await engine.createController({ id: 'default/vm1/hba0', socketPath });
      const dirStat = lstatSync(join(root, 'vm1'));
      expect([dirStat.uid, dirStat.gid, dirStat.mode & 0o777]).toEqual([107, 107, 0o700]);
      const sockStat = lstatSync(socketPath);
      expect(sockStat.isSocket()).toBe(true);
      expect([sockStat.uid, sockStat.gid, sockStat.mode & 0o777]).toEqual([107, 107, 0o600]);
      expect(canConnectAs(107, 107, socketPath)).toBe(true);
      expect(canConnectAs(4242, 4242, socketPath)).toBe(false);
      await engine.deleteController('default/vm1/hba0');
      // A restart finds the directory owned by 107 and accepts it.
      await engine.createController({ id: 'default/vm1/hba0', socketPath });
      expect(lstatSync(socketPath).uid).toBe(107);
    } finally {
      await engine.close();
    }
  });

  it('0660 lets the owner group in through a 0750 directory', async () => {
    const engine = createEngine(logger, { socketOwner: { uid: 107, gid: 107, mode: 0o660 } });
    try {
      const socketPath = join(root, 'vm2', 'hba0.sock');
      await engine.createController({ id: 'default/vm2/hba0', socketPath });
      expect(lstatSync(join(root, 'vm2')).mode & 0o777).toBe(0o750);
      expect(lstatSync(socketPath).mode & 0o777).toBe(0o660);
      expect(canConnectAs(4243, 107, socketPath)).toBe(true); // another uid in group 107
      expect(canConnectAs(4243, 4243, socketPath)).toBe(false);
    } finally {
      await engine.close();
    }
  });

  it('without socketOwner the socket stays ours: uid 107 cannot connect', async () => {
    const engine = createEngine(logger);
    try {
      const socketPath = join(root, 'vm3', 'hba0.sock');
      await engine.createController({ id: 'default/vm3/hba0', socketPath });
      expect(lstatSync(socketPath).uid).toBe(0);
      expect(lstatSync(join(root, 'vm3')).mode & 0o777).toBe(0o700);
      expect(canConnectAs(107, 107, socketPath)).toBe(false);
    } finally {
      await engine.close();
    }
  });
});
