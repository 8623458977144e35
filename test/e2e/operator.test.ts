// The operator against a real kube-apiserver + etcd (test/k8s): the generated
// CRD installed, the README's examples applied with kubectl, every disk
// Assigned exactly as the planner predicts; invalid and identity-changing
// manifests refused by the API server naming the field; deletion waits for
// the volume to be detached; a second writer loses nothing; leader election.
// Needs scripts/build-go-tools.sh (kube-apiserver, etcd, kubectl).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApiServer, type TestApiServer } from '../k8s/apiserver.ts';
import { kubectl, kubectlOk } from '../k8s/kubectl.ts';
import { missingToolsReason } from '../k8s/tools.ts';
import { CRD_NAME } from '../../operator/crd.ts';
import {
  OperatorProcess, REPO, createDisks, createNamespace, kubeClient, listDisks, listPvcs, predict, startPvcProtectionController, waitFor,
} from '../../operator/testing/harness.ts';
import type { KubeHttp } from '../../operator/stores/kube-http.ts';
import { PATCH_TYPES } from '../../operator/stores/kube-http.ts';
import type { DiskObject } from '../../operator/objects.ts';

const skipReason = missingToolsReason(['kube-apiserver', 'etcd', 'kubectl']);
if (skipReason) console.warn(`operator e2e: SKIPPED, ${skipReason}`);

const CRD_FILE = `${REPO}/deploy/helm/vhba/crds/${CRD_NAME}.yaml`;

/** Waits until every disk of `namespace` (at least `count`) has phase `phase`. */
async function waitForPhase(http: KubeHttp, namespace: string, count: number, phase = 'Assigned', timeoutMs = 60_000): Promise<DiskObject[]> {
  return waitFor(`${count} disks ${phase} in ${namespace}`, async () => {
    const disks = await listDisks(http, namespace);
    return disks.length >= count && disks.every((d) => d.status?.phase === phase) ? disks : undefined;
  }, timeoutMs);
}

describe.skipIf(skipReason !== undefined)(`operator against kube-apiserver${skipReason ? ` (skipped: ${skipReason})` : ''}`, () => {
  let cluster: TestApiServer | undefined;
  let http: KubeHttp;
  let operator: OperatorProcess | undefined;
  let pvcProtection: { stop(): void } | undefined;
  const kc = (): string => cluster!.kubeconfigPath;

  beforeAll(async () => {
    cluster = await startTestApiServer();
    http = kubeClient(kc());
    await kubectlOk(kc(), ['apply', '--server-side', '-f', CRD_FILE]);
    await kubectlOk(kc(), ['wait', '--for=condition=Established', `crd/${CRD_NAME}`, '--timeout=60s']);
    pvcProtection = startPvcProtectionController(http, () => ['default', 'writer', 'leader']);
    operator = await OperatorProcess.start({ kubeconfigPath: kc(), namespace: 'default' });
  });

  afterAll(async () => {
    pvcProtection?.stop();
    await operator?.stop();
    await cluster?.stop();
  });

  it('kubectl apply -f examples/: every disk Assigned with the predicted address, serial, WWN and guest paths', async () => {
    const applied = await kubectl(kc(), ['apply', '-f', `${REPO}/examples/`]);
    expect(applied.stderr).toBe('');
    expect(applied.code).toBe(0);
    const disks = await waitForPhase(http, 'default', 6);
    const predicted = predict(disks);
    expect(predicted.size).toBe(6);
    const byName = new Map(disks.map((d) => [d.metadata.name, d]));
    // The README's table (examples/README.md).
    expect(Object.fromEntries([...byName].map(([n, d]) => [n, d.status?.scsiAddress]))).toEqual({
      'demo-4k': '0:0:0', 'demo-data': '0:1:0', 'demo-data-far': '0:1:300', 'demo-readonly': '0:2:0', 'demo-system': '0:3:0', 'demo-dedicated': '1:0:0',
    });
    for (const d of disks) {
      const want = predicted.get(`default/${d.metadata.name}`);
      expect(d.status).toMatchObject({ ...want, phase: 'Assigned', observedGeneration: 1 });
      expect(d.metadata.finalizers).toEqual(['vhba.io/release-address']);
      expect(d.status?.conditions).toEqual([expect.objectContaining({ type: 'Assigned', status: 'True', reason: 'Assigned' })]);
    }
    expect(byName.get('demo-data')?.status).toMatchObject({ serial: 'DEMO-DATA-0001', wwn: '0x3000000000000d01', guestDevicePaths: ['/dev/disk/by-id/scsi-33000000000000d01', '/dev/disk/by-id/wwn-0x3000000000000d01'] });

    // One claim per disk, owned by it, carrying the assignment for the CSI plugin.
    const pvcs = await waitFor('6 claims', async () => { const l = await listPvcs(http, 'default'); return l.length === 6 ? l : undefined; });
    for (const d of disks) {
      const pvc = pvcs.find((p) => p.metadata.name === `vhba-${d.metadata.uid}`);
      expect(pvc?.metadata.ownerReferences?.[0]?.uid).toBe(d.metadata.uid);
      const [c, t, l] = (d.status?.scsiAddress ?? '').split(':');
      expect(pvc?.metadata.annotations).toMatchObject({ 'vhba.io/vm': 'demo', 'vhba.io/controller': c, 'vhba.io/target': t, 'vhba.io/lun': l, 'vhba.io/serial': d.status?.serial, 'vhba.io/wwn': d.status?.wwn });
      expect(pvc?.spec).toMatchObject({ storageClassName: 'vhba', volumeMode: 'Block' });
    }

    // Printer columns and short name.
    const table = await kubectlOk(kc(), ['get', 'vdisk', 'demo-data-far']);
    expect(table).toMatch(/NAME\s+VM\s+ADDRESS\s+SERIAL\s+CAPACITY\s+PHASE\s+AGE/);
    expect(table).toMatch(/demo-data-far\s+demo\s+0:1:300\s+VH\w{18}\s+64Mi\s+Assigned/);
    // kubectl explain documents the fields.
    expect(await kubectlOk(kc(), ['explain', 'virtualdisk.spec.serial'])).toContain('Unit serial number (VPD page 0x80)');
    expect(await kubectlOk(kc(), ['explain', 'virtualdisk.status.guestDevicePaths'])).toContain('/dev/disk/by-id');
    // Events for the decisions.
    const events = await kubectlOk(kc(), ['get', 'events', '-n', 'default', '--field-selector', 'involvedObject.name=demo-data-far', '-o', 'jsonpath={.items[*].reason}']);
    expect(events.split(' ').sort()).toEqual(['Assigned', 'ClaimCreated']);
    // Probes and metrics.
    expect((await operator!.get('/healthz')).status).toBe(200);
    expect((await operator!.get('/readyz')).status).toBe(200);
    const metrics = (await operator!.get('/metrics')).text;
    expect(metrics).toContain('vhba_operator_disks{phase="Assigned"} 6');
    expect(metrics).toMatch(/vhba_operator_actions_total\{kind="createClaim"\} 6/);
    expect(metrics).toMatch(/vhba_operator_reconcile_duration_seconds_count [1-9]/);
  });

  it('invalid manifests are rejected at admission with a message naming the field', async () => {
    const manifest = (name: string, spec: string) => `apiVersion: vhba.io/v1alpha1\nkind: VirtualDisk\nmetadata: { name: ${name} }\nspec: { vmName: demo, capacity: 1Gi, storageClassName: vhba, ${spec} }\n`;
    const cases: [string, string, RegExp][] = [
      ['bad-serial-long', 'serial: "ABCDEFGHIJKLMNOPQRSTUVWXYZ"', /spec\.serial/],
      ['bad-serial-chars', 'serial: "caf\\u00e9"', /spec\.serial/],
      ['bad-block', 'logicalBlockSize: 1000', /spec\.logicalBlockSize/],
      ['bad-physical', 'logicalBlockSize: 4096, physicalBlockSize: 512', /physicalBlockSize must be at least logicalBlockSize/],
      ['bad-target', 'address: { target: 256, lun: 0 }', /spec\.address\.target/],
      ['bad-lun', 'address: { target: 0, lun: 16384 }', /spec\.address\.lun/],
      ['bad-wwn', 'wwn: "0x1234"', /spec\.wwn/],
      ['bad-dedicated', 'ioProfile: dedicated, address: { controller: 0, target: 0, lun: 0 }', /spec\.address\.controller/],
    ];
    for (const [name, spec, field] of cases) {
      const res = await kubectl(kc(), ['apply', '-f', '-'], { input: manifest(name, spec) });
      expect(res.code, name).not.toBe(0);
      expect(res.stderr, name).toMatch(field);
    }
    const noVm = await kubectl(kc(), ['apply', '-f', '-'], { input: 'apiVersion: vhba.io/v1alpha1\nkind: VirtualDisk\nmetadata: { name: no-vm }\nspec: { capacity: 1Gi, storageClassName: vhba }\n' });
    expect(noVm.stderr).toMatch(/spec\.vmName: Required value/);
    // Identity is immutable once set.
    const immutable: [string, RegExp][] = [
      ['{"spec":{"serial":"OTHER"}}', /spec\.serial.*immutable/],
      ['{"spec":{"vmName":"other"}}', /spec\.vmName.*immutable/],
      ['{"spec":{"address":{"controller":0,"target":2,"lun":0}}}', /spec\.address.*immutable/],
      ['{"spec":{"wwn":null}}', /spec\.wwn may not be removed/],
    ];
    for (const [patch, message] of immutable) {
      const res = await kubectl(kc(), ['patch', 'vdisk', 'demo-data', '--type=merge', '-p', patch]);
      expect(res.code, patch).not.toBe(0);
      expect(res.stderr, patch).toMatch(message);
    }
    expect((await listDisks(http, 'default')).map((d) => d.metadata.name).sort()).toEqual(['demo-4k', 'demo-data', 'demo-data-far', 'demo-dedicated', 'demo-readonly', 'demo-system']);
  });

  it('deletion releases the address only after the volume is detached, then the next disk may take it', async () => {
    const disk = (await listDisks(http, 'default')).find((d) => d.metadata.name === 'demo-readonly')!;
    const pvcName = `vhba-${disk.metadata.uid}`;
    // A bound PV and a VolumeAttachment for it: the volume is attached to a node.
    await http.send({ method: 'POST', path: '/api/v1/persistentvolumes', body: {
      apiVersion: 'v1', kind: 'PersistentVolume', metadata: { name: 'pv-readonly' },
      spec: { capacity: { storage: '64Mi' }, accessModes: ['ReadWriteOnce'], volumeMode: 'Block', storageClassName: 'vhba', claimRef: { namespace: 'default', name: pvcName, uid: (await listPvcs(http, 'default')).find((p) => p.metadata.name === pvcName)?.metadata.uid }, csi: { driver: 'scsi.vhba.io', volumeHandle: 'vol-1' } },
    } });
    await http.send({ method: 'POST', path: '/apis/storage.k8s.io/v1/volumeattachments', body: {
      apiVersion: 'storage.k8s.io/v1', kind: 'VolumeAttachment', metadata: { name: 'va-readonly' },
      spec: { attacher: 'scsi.vhba.io', nodeName: 'node-1', source: { persistentVolumeName: 'pv-readonly' } },
    } });
    await kubectlOk(kc(), ['delete', 'vdisk', 'demo-readonly', '--wait=false']);
    const releasing = await waitFor('Releasing', async () => {
      const d = (await listDisks(http, 'default')).find((x) => x.metadata.name === 'demo-readonly');
      return d?.status?.conditions?.find((c) => c.reason === 'Releasing') === undefined ? undefined : d;
    });
    expect(releasing.status?.conditions?.[0]?.message).toContain('va-readonly');
    // A new disk does not get the held address 0:2:0.
    await kubectlOk(kc(), ['apply', '-f', '-'], { input: 'apiVersion: vhba.io/v1alpha1\nkind: VirtualDisk\nmetadata: { name: demo-late }\nspec: { vmName: demo, capacity: 1Gi, storageClassName: vhba }\n' });
    const late = await waitFor('demo-late Assigned', async () => (await listDisks(http, 'default')).find((d) => d.metadata.name === 'demo-late' && d.status?.phase === 'Assigned'));
    expect(late.status?.scsiAddress).toBe('0:4:0');
    expect((await listPvcs(http, 'default')).some((p) => p.metadata.name === pvcName)).toBe(true);

    // Detach: the claim is deleted, then the finalizer goes, then the disk.
    await http.send({ method: 'DELETE', path: '/apis/storage.k8s.io/v1/volumeattachments/va-readonly' });
    await waitFor('demo-readonly gone', async () => ((await listDisks(http, 'default')).some((d) => d.metadata.name === 'demo-readonly') ? undefined : true), 60_000);
    expect((await listPvcs(http, 'default')).some((p) => p.metadata.name === pvcName)).toBe(false);
    const reasons = await kubectlOk(kc(), ['get', 'events', '-n', 'default', '--field-selector', 'involvedObject.name=demo-readonly', '-o', 'jsonpath={.items[*].reason}']);
    expect(reasons.split(' ')).toEqual(expect.arrayContaining(['WaitingForDetach', 'ClaimDeleted', 'Released']));
    // The released address goes to the next new disk.
    await kubectlOk(kc(), ['apply', '-f', '-'], { input: 'apiVersion: vhba.io/v1alpha1\nkind: VirtualDisk\nmetadata: { name: demo-later }\nspec: { vmName: demo, capacity: 1Gi, storageClassName: vhba }\n' });
    const later = await waitFor('demo-later Assigned', async () => (await listDisks(http, 'default')).find((d) => d.metadata.name === 'demo-later' && d.status?.phase === 'Assigned'));
    expect(later.status?.scsiAddress).toBe('0:2:0');
  });

  it('a second writer updating the same objects loses nothing', async () => {
    await createNamespace(http, 'writer');
    const op = await OperatorProcess.start({ kubeconfigPath: kc(), namespace: 'writer' });
    try {
      const names = Array.from({ length: 30 }, (_, i) => `w${String(i).padStart(2, '0')}`);
      const creating = createDisks(http, 'writer', names.map((name, i) => ({ name, spec: { vmName: `vm${i % 3}`, capacity: '1Mi', storageClassName: 'vhba' } })), 4);
      // The second writer: labels on the object (merge patch, no precondition)
      // and an Attached condition in the status (read-modify-write with
      // resourceVersion, retrying on conflict, as the CSI plugin would).
      const writer = async (name: string) => {
        await waitFor(`${name} exists`, () => http.send({ method: 'GET', path: `/apis/vhba.io/v1alpha1/namespaces/writer/virtualdisks/${name}` }), 30_000, 20);
        for (let round = 0; round < 3; round++) {
          await http.send({ method: 'PATCH', path: `/apis/vhba.io/v1alpha1/namespaces/writer/virtualdisks/${name}`, contentType: PATCH_TYPES.merge, body: { metadata: { labels: { [`writer-${round}`]: 'yes' } } } });
        }
        for (let attempt = 0; ; attempt++) {
          const d = await http.send<{ metadata: { resourceVersion: string }; status?: { conditions?: object[] } }>({ method: 'GET', path: `/apis/vhba.io/v1alpha1/namespaces/writer/virtualdisks/${name}` });
          const conditions = [...(d.status?.conditions ?? []).filter((c) => (c as { type: string }).type !== 'Attached'), { type: 'Attached', status: 'True', reason: 'Published', message: 'attached on node-1', lastTransitionTime: new Date().toISOString().replace(/\.\d+Z$/, 'Z') }];
          try {
            await http.send({ method: 'PATCH', path: `/apis/vhba.io/v1alpha1/namespaces/writer/virtualdisks/${name}/status`, contentType: PATCH_TYPES.merge, body: { metadata: { resourceVersion: d.metadata.resourceVersion }, status: { conditions } } });
            return attempt;
          } catch (e) {
            if ((e as { kind?: string }).kind !== 'Conflict' || attempt > 50) throw e;
          }
        }
      };
      const writerRetries = await Promise.all(names.map(writer));
      await creating;
      const disks = await waitFor('30 disks Assigned with Attached kept', async () => {
        const l = await listDisks(http, 'writer');
        return l.length === 30 && l.every((d) => d.status?.phase === 'Assigned' && d.status.conditions?.length === 2) ? l : undefined;
      });
      for (const d of disks) {
        expect(d.metadata.labels).toMatchObject({ 'writer-0': 'yes', 'writer-1': 'yes', 'writer-2': 'yes' });
        expect(d.metadata.finalizers).toEqual(['vhba.io/release-address']);
        expect(d.status?.conditions?.map((c) => `${c.type}=${c.status}`)).toEqual(['Assigned=True', 'Attached=True']);
      }
      const predicted = predict(disks);
      for (const d of disks) expect(d.status?.scsiAddress).toBe(predicted.get(`writer/${d.metadata.name}`)?.scsiAddress);
      const conflicts = /vhba_operator_conflicts_total (\d+)/.exec((await op.get('/metrics')).text)?.[1];
      console.log(`operator e2e: second writer: operator conflicts ${conflicts}, writer retries ${writerRetries.reduce((a, b) => a + b, 0)}`);
    } finally {
      await op.stop();
    }
  });

  it('leader election: one of two replicas acts; the standby takes over when the leader stops', async () => {
    await createNamespace(http, 'leader');
    const common = { kubeconfigPath: kc(), namespace: 'leader', args: ['--leader-elect', '--lease-name', 'vhba-e2e', '--lease-namespace', 'leader'] };
    const a = await OperatorProcess.start({ ...common, args: [...common.args, '--identity', 'replica-a'] });
    const b = await OperatorProcess.start({ ...common, args: [...common.args, '--identity', 'replica-b'], until: /vhba operator starting/ });
    try {
      const lease = () => http.send<{ spec: { holderIdentity?: string } }>({ method: 'GET', path: '/apis/coordination.k8s.io/v1/namespaces/leader/leases/vhba-e2e' });
      expect((await lease()).spec.holderIdentity).toBe('replica-a');
      expect((await a.get('/metrics')).text).toContain('vhba_operator_leader 1');
      await createDisks(http, 'leader', [{ name: 'l1', spec: { vmName: 'vm', capacity: '1Mi', storageClassName: 'vhba' } }]);
      await waitForPhase(http, 'leader', 1);
      expect(a.logs).toContain('"disk":"leader/l1"');
      // The standby must not have led while the leader was up; once the
      // leader stops (releasing its lease) the standby may take over at once,
      // so only acquisitions logged before the stop began count.
      const stopping = Date.now();
      expect(await a.stop()).toBe(0);
      const acquiredAt = b.logs.split('\n').filter((line) => line.includes('lease acquired'))
        .map((line) => (JSON.parse(line) as { time: number }).time);
      expect(acquiredAt.filter((t) => t < stopping)).toEqual([]);
      const standby = b;
      await waitFor('replica-b leads', async () => ((await lease()).spec.holderIdentity === 'replica-b' ? true : undefined), 30_000);
      await createDisks(http, 'leader', [{ name: 'l2', spec: { vmName: 'vm', capacity: '1Mi', storageClassName: 'vhba' } }]);
      const disks = await waitForPhase(http, 'leader', 2);
      expect(disks.map((d) => d.status?.scsiAddress).sort()).toEqual(['0:0:0', '0:1:0']);
      expect(standby.logs).toContain('"disk":"leader/l2"');
      await standby.stop();
    } finally {
      await a.stop();
      await b.stop();
    }
  });
});
