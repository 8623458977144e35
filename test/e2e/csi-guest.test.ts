// The CSI plugin with a real guest (issue 5): `vhba engine` and
// `vhba csi --mode all` run as processes; a QEMU (TCG) guest is connected to
// the VM controller the node plugin created. Driven through the plugin's gRPC
// API only, as kubelet and the sidecars would:
//  - CreateVolume → ControllerPublish → NodeStage → NodePublish of a volume
//    while the guest runs makes its disk appear (by-id wwn-0x<WWN>, no rescan);
//  - ControllerExpandVolume + NodeExpandVolume grows it in the guest;
//  - CreateSnapshot while the guest writes to ext4 on it, restored with
//    CreateVolume from the snapshot: the restored image holds a consistent
//    file system (host e2fsck after journal replay) with every file the guest
//    had synced before the snapshot, byte for byte;
//  - and the sharper check of the same promise: snapshots taken while the
//    guest writes two ordered counters (first block, then last block) must
//    show them in an order the device ever held (one point in time);
//  - NodeUnpublish removes the disk from the guest.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitForLine } from '../csi/stack.ts';
import { createClient, type ServiceClient } from '../../protos/grpc.ts';
import { Controller, Node, VolumeCapability_AccessMode_Mode as AccessMode } from '../../protos/gen/csi/v1/csi_pb.ts';
import { EngineService } from '../../protos/gen/vhba/hba/v1/hba_pb.ts';
import { deriveWwn } from '../../operator/identity.ts';
import { ContextKey } from '../../csi/volumes.ts';
import { Guest } from '../guest/qemu.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const VHBA = join(ROOT, 'bin', 'vhba');
const MiB = 1024 * 1024;
const NODE_ID = 'guest-node';
const VM = 'csi-e2e/vm1';
const BLOCK_CAP = { accessType: { case: 'block' as const, value: {} }, accessMode: { mode: AccessMode.SINGLE_NODE_WRITER } };

type ControllerClient = ServiceClient<(typeof Controller)['method']>;
type NodeClient = ServiceClient<(typeof Node)['method']>;
type EngineClient = ServiceClient<(typeof EngineService)['method']>;

/** A volume taken through the whole publish sequence. */
interface Published {
  id: string;
  context: Record<string, string>;
  staging: string;
  target: string;
  wwn: string;
  lunTarget: number;
  lun: number;
}

/** The guest's ext4 writer: each round writes a 128 KiB random file, syncs
 * and logs "synced <i> <sha256>"; between rounds unsynced churn keeps writes
 * in flight. Runs until /tmp/stop-writer exists. */
const WRITER = `i=0
while [ ! -e /tmp/stop-writer ]; do
  dd if=/dev/urandom of=/mnt/w/f$i bs=65536 count=2 2>/dev/null || echo "WRITE-FAIL $i"
  sync || echo "SYNC-FAIL $i"
  echo "synced $i $(sha256sum < /mnt/w/f$i | cut -d' ' -f1)"
  dd if=/dev/urandom of=/mnt/w/churn bs=65536 count=8 2>/dev/null
  i=$((i+1))
done
echo "done $i"
`;

describe('CSI plugin with a real guest (vhba engine + vhba csi --mode all)', () => {
  const dir = mkdtempSync('/tmp/vcg-'); // short: socket paths must stay under 108 bytes
  const children: ChildProcess[] = [];
  let controller: ControllerClient;
  let node: NodeClient;
  let engine: EngineClient;
  let guest: Guest | undefined;
  let first: Published;
  let second: Published;
  const timings: string[] = [];

  async function lunOf(volumeId: string, backing: string) {
    const list = await engine.listControllers({});
    for (const c of list.controllers) for (const l of c.luns) if (l.backingPath === backing) return { controller: c, lun: l };
    throw new Error(`engine has no LUN backed by ${backing} (volume ${volumeId})`);
  }

  /** CreateVolume → ControllerPublish → NodeStage → NodePublish (block). */
  async function provision(name: string, bytes: number): Promise<Published> {
    const created = await controller.createVolume({
      name, capacityRange: { requiredBytes: BigInt(bytes) }, volumeCapabilities: [BLOCK_CAP], parameters: { [ContextKey.vm]: VM },
    });
    const id = created.volume!.volumeId;
    const context = created.volume!.volumeContext;
    const pub = await controller.controllerPublishVolume({ volumeId: id, nodeId: NODE_ID, volumeCapability: BLOCK_CAP, volumeContext: context });
    const staging = join(dir, 'pub', `${name}-staging`);
    const target = join(dir, 'pub', `${name}-target`);
    await node.nodeStageVolume({ volumeId: id, stagingTargetPath: staging, volumeCapability: BLOCK_CAP, volumeContext: context, publishContext: pub.publishContext });
    await node.nodePublishVolume({
      volumeId: id, stagingTargetPath: staging, targetPath: target, volumeCapability: BLOCK_CAP, publishContext: pub.publishContext,
      volumeContext: { ...context, 'csi.storage.k8s.io/pod.name': 'virt-launcher-vm1', 'csi.storage.k8s.io/pod.namespace': 'csi-e2e' },
    });
    const { lun } = await lunOf(id, context[ContextKey.backingFile]!);
    return { id, context, staging, target, wwn: lun.parameters!.wwn, lunTarget: lun.address!.target, lun: lun.address!.lun };
  }


  const byId = (p: Published) => `/dev/disk/by-id/wwn-0x${p.wwn}`;

  beforeAll(async () => {
    mkdirSync(join(dir, 'pub'));
    const engineProc = spawn(VHBA, ['engine', '--socket-dir', join(dir, 's'), '--control-socket', join(dir, 'engine.sock'), '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(engineProc);
    await waitForLine(engineProc, /vhba engine: control API at/, 'vhba engine');
    const csi = spawn(VHBA, [
      'csi', '--mode', 'all', '--endpoint', `unix://${join(dir, 'csi.sock')}`, '--node-id', NODE_ID,
      '--state-dir', join(dir, 'state'), '--data-dir', join(dir, 'data'), '--engine-endpoint', `unix://${join(dir, 'engine.sock')}`,
      '--publish-root', join(dir, 'pub'), '--socket-dir', join(dir, 's'),
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(csi);
    await waitForLine(csi, /csi plugin listening/, 'vhba csi');
    controller = createClient(Controller, `unix://${join(dir, 'csi.sock')}`);
    node = createClient(Node, `unix://${join(dir, 'csi.sock')}`);
    engine = createClient(EngineService, `unix://${join(dir, 'engine.sock')}`);

    // The first volume's NodePublish creates the VM's controller (and its
    // vhost-user socket), which QEMU then connects to.
    first = await provision('first', 32 * MiB);
    const { controller: c } = await lunOf(first.id, first.context[ContextKey.backingFile]!);
    guest = await Guest.boot({
      name: 'csi-guest',
      extraArgs: ['-chardev', `socket,id=c0,path=${c.socketPath}`, '-device', 'vhost-user-scsi-pci,chardev=c0,num_queues=1'],
    });
    timings.push(`boot ${guest.bootMs} ms`);
    console.log(`csi-guest: controller ${c.id} at ${c.socketPath}; boot ${guest.bootMs} ms; log ${guest.consoleLogPath}`);
  });

  afterAll(async () => {
    console.log(`csi-guest timings: ${timings.join('; ')}`);
    await guest?.shutdown();
    for (const client of [controller, node, engine]) client?.close();
    for (const child of children.reverse()) child.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 500));
    rmSync(dir, { recursive: true, force: true });
  });

  it('the volume published before boot is in the guest under its by-id name', async () => {
    expect(first.wwn).toBe(deriveWwn(first.id));
    const ok = await guest!.pollUntil(`[ -e ${byId(first)} ]`, 60);
    expect(ok, await guest!.check('ls -l /dev/disk/by-id/')).toBe(true);
  });

  it('CreateVolume → ControllerPublish → NodeStage → NodePublish makes a disk appear in the running guest', async () => {
    const t0 = Date.now();
    second = await provision('second', 64 * MiB);
    const tPlugin = Date.now() - t0;
    expect(second.wwn).toBe(deriveWwn(second.id));
    const ok = await guest!.pollUntil(`[ -e ${byId(second)} ]`, 120);
    const tGuest = Date.now() - t0;
    const listing = await guest!.check('ls -l /dev/disk/by-id/; lsblk -b -d -o NAME,HCTL,SIZE,WWN');
    timings.push(`publish RPCs ${tPlugin} ms, by-id in guest ${tGuest} ms`);
    console.log(`csi-guest: publish RPCs ${tPlugin} ms; wwn-0x${second.wwn} in the guest after ${tGuest} ms\n${listing}`);
    expect(ok, listing).toBe(true);
    const out = await guest!.check(`dev=$(readlink -f ${byId(second)}); ls /sys/block/\${dev#/dev/}/device/scsi_device; blockdev --getsize64 $dev`);
    const [hctl, size] = out.trim().split(/\s+/);
    expect(hctl).toMatch(new RegExp(`^\\d+:0:${second.lunTarget}:${second.lun}$`));
    expect(Number(size)).toBe(64 * MiB);
  });

  it('ControllerExpandVolume + NodeExpandVolume grows the disk in the guest', async () => {
    const t0 = Date.now();
    const expanded = await controller.controllerExpandVolume({ volumeId: second.id, capacityRange: { requiredBytes: BigInt(96 * MiB) }, volumeCapability: BLOCK_CAP });
    expect(expanded.capacityBytes).toBe(BigInt(96 * MiB));
    expect(expanded.nodeExpansionRequired).toBe(true);
    const nodeExp = await node.nodeExpandVolume({ volumeId: second.id, volumePath: second.target, capacityRange: { requiredBytes: BigInt(96 * MiB) }, volumeCapability: BLOCK_CAP });
    expect(nodeExp.capacityBytes).toBe(BigInt(96 * MiB));
    const grown = await guest!.pollUntil(`[ "$(blockdev --getsize64 ${byId(second)})" = "${96 * MiB}" ]`, 120);
    const tGuest = Date.now() - t0;
    timings.push(`expand → guest size ${tGuest} ms`);
    console.log(`csi-guest: expand RPCs → 96 MiB in the guest after ${tGuest} ms`);
    expect(grown, await guest!.check(`blockdev --getsize64 ${byId(second)}`)).toBe(true);
  });

  it('a snapshot taken while the guest writes restores to a consistent file system holding every synced file', async () => {
    await guest!.check(`mkfs.ext4 -F -q ${byId(second)} && mkdir -p /mnt/w && mount -t ext4 ${byId(second)} /mnt/w && echo mounted`, { timeoutMs: 180_000 });
    await guest!.check(`cat > /tmp/writer.sh <<'EOF'\n${WRITER}EOF\nsetsid sh /tmp/writer.sh > /tmp/writer.log 2>&1 < /dev/null &\necho started`);
    expect(await guest!.pollUntil(`grep -q '^synced 3 ' /tmp/writer.log`, 180)).toBe(true);
    // Files whose sync returned before the snapshot is requested must be in it.
    const before = (await guest!.check('cat /tmp/writer.log')).trim();
    const engineWritesBefore = (await lunOf(second.id, second.context[ContextKey.backingFile]!)).lun.writes;
    const t0 = Date.now();
    const snap = await controller.createSnapshot({ name: 'under-write', sourceVolumeId: second.id });
    const tSnap = Date.now() - t0;
    expect(snap.snapshot!.readyToUse).toBe(true);
    // The guest kept writing across the snapshot.
    const lastBefore = Math.max(...[...before.matchAll(/^synced (\d+) /gm)].map((m) => Number(m[1])));
    expect(await guest!.pollUntil(`grep -q '^synced ${lastBefore + 2} ' /tmp/writer.log`, 180)).toBe(true);
    const engineWritesAfter = (await lunOf(second.id, second.context[ContextKey.backingFile]!)).lun.writes;
    expect(engineWritesAfter).toBeGreaterThan(engineWritesBefore);
    await guest!.check('touch /tmp/stop-writer');
    expect(await guest!.pollUntil(`grep -q '^done' /tmp/writer.log`, 120)).toBe(true);
    const log = await guest!.check('cat /tmp/writer.log');
    expect(log).not.toMatch(/WRITE-FAIL|SYNC-FAIL/);

    const restored = await controller.createVolume({
      name: 'restored', capacityRange: { requiredBytes: BigInt(96 * MiB) }, volumeCapabilities: [BLOCK_CAP],
      volumeContentSource: { type: { case: 'snapshot', value: { snapshotId: snap.snapshot!.snapshotId } } },
    });
    const image = restored.volume!.volumeContext[ContextKey.backingFile]!;
    // Mounting replays the journal; do the same on a copy, then check read-only.
    const checked = join(dir, 'restored-check.img');
    copyFileSync(image, checked);
    const replay = spawnSync('e2fsck', ['-E', 'journal_only', '-y', checked], { encoding: 'utf8' });
    const fsck = spawnSync('e2fsck', ['-f', '-n', checked], { encoding: 'utf8' });
    timings.push(`CreateSnapshot under write ${tSnap} ms`);
    console.log(`csi-guest: CreateSnapshot under write ${tSnap} ms (guest round ${lastBefore} synced before, writer stopped at ${/^done (\d+)$/m.exec(log)?.[1]})\n` +
      `journal replay: rc ${replay.status} ${replay.stdout.trim()}\ne2fsck -fn: rc ${fsck.status}\n${fsck.stdout}${fsck.stderr}`);
    expect(replay.status, replay.stdout + replay.stderr).toBeLessThanOrEqual(1); // 0 or 1: journal replayed
    expect(fsck.status, fsck.stdout + fsck.stderr).toBe(0);
    // Every file synced before the snapshot, byte for byte.
    const synced = [...before.matchAll(/^synced (\d+) ([0-9a-f]{64})$/gm)];
    expect(synced.length).toBeGreaterThanOrEqual(4);
    for (const [, i, sha] of synced) {
      const dump = spawnSync('debugfs', ['-R', `cat /f${i}`, checked], { maxBuffer: 16 * MiB });
      expect(createHash('sha256').update(dump.stdout).digest('hex'), `f${i} in the restored image`).toBe(sha);
    }
    await guest!.check('umount /mnt/w && echo unmounted', { timeoutMs: 120_000 });
  });

  it('a snapshot under write is point-in-time: two counters written in order are never seen out of order', async () => {
    // Each round writes counter i to the first block, then to the last block,
    // O_DIRECT with a flush after each. At every instant the device holds
    // first == last or first == last + 1; an image copied while writes land
    // (not one point in time) can show last > first.
    const bytes = 96 * MiB;
    const lastBlock = bytes / 512 - 1;
    const probe = `dev=$(readlink -f ${byId(second)}); i=1
while [ ! -e /tmp/stop-pit ] && [ -b "$dev" ]; do
  printf '%016d' $i > /tmp/pit; head -c 496 /dev/zero >> /tmp/pit
  dd if=/tmp/pit of=$dev bs=512 seek=0 oflag=direct conv=fsync 2>/dev/null || echo "WRITE-FAIL $i"
  dd if=/tmp/pit of=$dev bs=512 seek=${lastBlock} oflag=direct conv=fsync 2>/dev/null || echo "WRITE-FAIL $i"
  echo "round $i"; i=$((i+1))
done
echo "done $i"
`;
    await guest!.check(`cat > /tmp/pit.sh <<'EOF'\n${probe}EOF\nsetsid sh /tmp/pit.sh > /tmp/pit.log 2>&1 < /dev/null &\necho started`);
    expect(await guest!.pollUntil(`grep -q '^round 5$' /tmp/pit.log`, 120)).toBe(true);
    const seen: string[] = [];
    try {
      for (let attempt = 0; attempt < 3; attempt++) {
        const snap = await controller.createSnapshot({ name: `pit-${attempt}`, sourceVolumeId: second.id });
        const restored = await controller.createVolume({
          name: `pit-${attempt}`, capacityRange: { requiredBytes: BigInt(bytes) }, volumeCapabilities: [BLOCK_CAP],
          volumeContentSource: { type: { case: 'snapshot', value: { snapshotId: snap.snapshot!.snapshotId } } },
        });
        const image = restored.volume!.volumeContext[ContextKey.backingFile]!;
        const fh = await open(image, 'r');
        const head = Buffer.alloc(16);
        const tail = Buffer.alloc(16);
        try {
          await fh.read(head, 0, 16, 0);
          await fh.read(tail, 0, 16, lastBlock * 512);
        } finally {
          await fh.close();
        }
        const first = Number(head.toString('latin1'));
        const last = Number(tail.toString('latin1'));
        seen.push(`first=${first} last=${last}`);
        expect(Number.isInteger(first) && first > 0, `snapshot ${attempt}: first block ${JSON.stringify(head.toString('latin1'))}`).toBe(true);
        expect(first === last || first === last + 1, `snapshot ${attempt} is not one point in time: first block holds round ${first}, last block round ${last}`).toBe(true);
      }
    } finally {
      await guest!.check('touch /tmp/stop-pit');
      console.log(`csi-guest: point-in-time probe: ${seen.join('; ')}`);
    }
    expect(await guest!.pollUntil(`grep -q '^done' /tmp/pit.log`, 60)).toBe(true);
    const log = await guest!.check('tail -1 /tmp/pit.log; grep -c WRITE-FAIL /tmp/pit.log || true');
    console.log(`csi-guest: point-in-time probe guest log: ${log.trim().replace(/\n/g, ', ')}`);
    expect(log).toMatch(/\n0\s*$/);
  });

  it('NodeUnpublish removes the disk from the guest; unstage, unpublish and delete finish cleanly', async () => {
    // Nothing of the earlier tests may still hold the disk, even if one failed.
    await guest!.run('touch /tmp/stop-writer /tmp/stop-pit; sleep 1; umount /mnt/w 2>/dev/null; true', { timeoutMs: 120_000 });
    const t0 = Date.now();
    await node.nodeUnpublishVolume({ volumeId: second.id, targetPath: second.target });
    const gone = await guest!.pollUntil(`[ ! -e ${byId(second)} ]`, 120);
    const tGuest = Date.now() - t0;
    timings.push(`unpublish → gone from guest ${tGuest} ms`);
    const listing = await guest!.check('ls -l /dev/disk/by-id/');
    console.log(`csi-guest: NodeUnpublish → wwn-0x${second.wwn} gone from the guest after ${tGuest} ms\n${listing}`);
    expect(gone, listing).toBe(true);
    expect(listing).toContain(`wwn-0x${first.wwn}`); // the other disk stays
    await node.nodeUnstageVolume({ volumeId: second.id, stagingTargetPath: second.staging });
    await controller.controllerUnpublishVolume({ volumeId: second.id, nodeId: NODE_ID });
    await controller.deleteVolume({ volumeId: second.id });
    const luns = (await engine.listControllers({})).controllers.flatMap((c) => c.luns);
    expect(luns.map((l) => l.backingPath)).toEqual([first.context[ContextKey.backingFile]]);
  });
});
