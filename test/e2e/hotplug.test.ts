// Live topology with a real guest: `vhba serve` (in process: engine, control
// API, directory reconciler) serving a QEMU (TCG) guest through
// vhost-user-scsi-pci. While a checksummed write/read loop runs on one disk:
// three manifests dropped into the directory appear in the guest with the
// predicted /dev/disk/by-id names and no manual rescan (TRANSPORT_RESET /
// RESCAN); deleting one while I/O to it is in flight removes it from the guest
// (TRANSPORT_RESET / REMOVED) with the other disks unharmed; raising one's
// capacity changes the guest's size (PARAM_CHANGE 2Ah/09h).
import { mkdirSync, mkdtempSync, rmSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { putManifest, waitUntil } from '../wait.ts';
import { qemuArgsFor } from '../../cmd/qemu-args.ts';
import { defaultEngineFactory, startServe, type ServeHandle } from '../../cmd/serve.ts';
import { resolveDirs, type GuestDisk } from '../../cmd/topology.ts';
import { Guest } from '../guest/qemu.ts';

const MiB = 1024 * 1024;
const MEMORY = '512M';

function manifest(name: string, capacity: string): string {
  return `apiVersion: vhba.io/v1alpha1\nkind: VirtualDisk\nmetadata: {name: ${name}}\nspec: {vmName: hp, capacity: ${capacity}, source: {file: {path: hp/${name}.img}}}\n`;
}

/** The guest's checksummed write/read loop (runs until /tmp/stop-loop exists). */
const IO_LOOP = `dev=$1
i=0
while [ ! -e /tmp/stop-loop ]; do
  off=$((i % 32))
  head -c 262144 /dev/urandom > /tmp/loop-blk
  want=$(sha256sum < /tmp/loop-blk)
  dd if=/tmp/loop-blk of=$dev bs=262144 seek=$off oflag=direct conv=fsync 2>/dev/null || echo "WRITE-FAIL $i"
  got=$(dd if=$dev bs=262144 skip=$off count=1 iflag=direct 2>/dev/null | sha256sum)
  if [ "$got" = "$want" ]; then echo "ok $i"; else echo "MISMATCH $i"; fi
  i=$((i+1))
done
echo "done $i"
`;

describe('hotplug through vhba serve with a real guest', () => {
  let dir = '';
  let config = '';
  let serve: ServeHandle | undefined;
  let guest: Guest | undefined;
  const log = pino({ level: process.env.VHBA_TEST_LOG ?? 'warn' });

  function disk(key: string): GuestDisk | undefined {
    return serve!.topology.vms.flatMap((v) => v.disks).find((d) => d.key === key);
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'vhba-hotplug-'));
    config = join(dir, 'config');
    mkdirSync(config);
    putManifest(config, 'io.yaml', manifest('io', '64Mi'));
    const started = await startServe({
      configPath: config, dirs: resolveDirs(join(dir, 's')), logger: log, engineFactory: defaultEngineFactory,
      out: (t) => process.stdout.write(t), err: (t) => process.stderr.write(t), debounceMs: 200, resyncMs: 10_000,
    });
    if (typeof started === 'number') throw new Error(`vhba serve failed: ${started}`);
    serve = started;
    const vm = serve.topology.vms.find((v) => v.vmName === 'hp')!;
    guest = await Guest.boot({ name: 'hotplug', memory: MEMORY, extraArgs: qemuArgsFor(vm, MEMORY) });
    console.log(`hotplug: boot ${guest.bootMs} ms; log ${guest.consoleLogPath}`);
  });

  afterAll(async () => {
    await guest?.shutdown();
    await serve?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('the running disk is there and a checksummed I/O loop runs on it', async () => {
    const io = disk('default/io')!;
    expect(await guest!.pollUntil(`[ -e ${io.guestDevicePaths[1]} ]`, 60)).toBe(true);
    await guest!.check(`cat > /tmp/loop.sh <<'EOF'\n${IO_LOOP}EOF\nsetsid sh /tmp/loop.sh ${io.guestDevicePaths[1]} > /tmp/loop.log 2>&1 < /dev/null &\necho started`);
    expect(await guest!.pollUntil(`grep -q '^ok 2$' /tmp/loop.log`, 120)).toBe(true);
  });

  let added: GuestDisk[] = [];

  it('three manifests dropped into the directory appear in the guest with the predicted by-id names, no rescan', async () => {
    const t0 = Date.now();
    putManifest(config, 'b.yaml', manifest('b', '32Mi'));
    putManifest(config, 'c.yaml', manifest('c', '32Mi'));
    putManifest(config, 'd.yaml', manifest('d', '32Mi'));
    await waitUntil(() => ['default/b', 'default/c', 'default/d'].every((k) => disk(k) !== undefined && serve!.engine.list()[0]!.luns.length === 4), 'serve to attach b, c, d');
    const tEngine = Date.now() - t0;
    added = ['default/b', 'default/c', 'default/d'].map((k) => disk(k)!);
    const paths = added.flatMap((d) => d.guestDevicePaths);
    const ok = await guest!.pollUntil(paths.map((p) => `[ -e ${p} ]`).join(' && '), 180);
    const tGuest = Date.now() - t0;
    const byId = await guest!.check('ls -l /dev/disk/by-id/');
    console.log(`hotplug: manifest write → engine attached all 3: ${tEngine} ms; → all 3 by-id names in the guest: ${tGuest} ms (TCG)\n${byId}`);
    expect(ok, byId).toBe(true);
    // Each appeared at its planned H:C:T:L with the manifest's size.
    for (const d of added) {
      const out = await guest!.check(`dev=$(readlink -f ${d.guestDevicePaths[1]}); n=\${dev#/dev/}; ls /sys/block/$n/device/scsi_device; blockdev --getsize64 $dev`);
      const [hctl, size] = out.trim().split(/\s+/);
      expect(hctl, d.key).toMatch(new RegExp(`^\\d+:0:${d.target}:${d.lun}$`));
      expect(Number(size), d.key).toBe(32 * MiB);
    }
    // Patterns on b and d, checked after the unplug of c.
    await guest!.check(`head -c 1048576 /dev/urandom > /tmp/pat; for p in ${added[0]!.guestDevicePaths[1]} ${added[2]!.guestDevicePaths[1]}; do dd if=/tmp/pat of=$p bs=65536 oflag=direct conv=fsync 2>/dev/null; done; sha256sum < /tmp/pat > /tmp/pat.sum`);
  });

  it('deleting a manifest while I/O to its disk is in flight removes it from the guest; the others are unharmed', async () => {
    const c = added[1]!;
    const lunOf = () => serve!.engine.list()[0]!.luns.find((l) => l.target === c.target && l.lun === c.lun);
    const writesBefore = lunOf()!.writes;
    await guest!.check(`(dd if=/dev/zero of=${c.guestDevicePaths[1]} bs=65536 count=100000 oflag=direct 2>/tmp/c.err; echo $? > /tmp/c.rc) > /dev/null 2>&1 < /dev/null &\necho started`);
    await waitUntil(() => (lunOf()?.writes ?? 0) > writesBefore + 20, 'writes to reach disk c', 120_000);
    const t0 = Date.now();
    unlinkSync(join(config, 'c.yaml'));
    await waitUntil(() => lunOf() === undefined, 'serve to detach c');
    const gone = await guest!.pollUntil(`[ ! -e ${c.guestDevicePaths[1]} ] && [ -e /tmp/c.rc ]`, 180);
    console.log(`hotplug: manifest delete → disk and its by-id names gone from the guest, the writer failed out: ${Date.now() - t0} ms; dd: ${(await guest!.run('cat /tmp/c.rc /tmp/c.err')).output.trim()}`);
    expect(gone).toBe(true);
    expect((await guest!.check('cat /tmp/c.rc')).trim()).not.toBe('0');
    // b and d still hold their data; the I/O loop keeps passing.
    const sums = await guest!.check(`for p in ${added[0]!.guestDevicePaths[1]} ${added[2]!.guestDevicePaths[1]}; do dd if=$p bs=65536 count=16 iflag=direct 2>/dev/null | sha256sum; done`);
    const want = (await guest!.check('cat /tmp/pat.sum')).trim();
    expect(sums.trim().split('\n')).toEqual([want, want]);
    const okBefore = Number((await guest!.check(`grep -c '^ok ' /tmp/loop.log`)).trim());
    expect(await guest!.pollUntil(`[ $(grep -c '^ok ' /tmp/loop.log) -ge ${okBefore + 2} ]`, 120)).toBe(true);
  });

  it('raising a capacity grows the disk in the guest', async () => {
    const d = added[2]!;
    const t0 = Date.now();
    putManifest(config, 'd.yaml', manifest('d', '96Mi'));
    const grown = await guest!.pollUntil(`[ "$(blockdev --getsize64 ${d.guestDevicePaths[1]})" = "${96 * MiB}" ]`, 180);
    console.log(`hotplug: capacity edit → new size in the guest: ${Date.now() - t0} ms`);
    expect(grown).toBe(true);
    expect(serve!.engine.list()[0]!.luns.find((l) => l.target === d.target)!.backing).toMatchObject({ sizeBytes: 96 * MiB });
  });

  it('the I/O loop never saw a mismatch or a failed write', async () => {
    await guest!.check('touch /tmp/stop-loop');
    expect(await guest!.pollUntil(`grep -q '^done' /tmp/loop.log`, 120)).toBe(true);
    const logText = await guest!.check('cat /tmp/loop.log');
    const done = /^done (\d+)$/m.exec(logText);
    console.log(`hotplug: I/O loop: ${done?.[1]} checksummed 256 KiB write/read rounds`);
    expect(logText).not.toMatch(/MISMATCH|WRITE-FAIL/);
    expect(Number(done?.[1])).toBeGreaterThan(4);
  });
});
