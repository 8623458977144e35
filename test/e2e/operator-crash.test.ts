// Crash and restart against a real kube-apiserver: the operator (a child
// process) is stopped right after each kind of side effect
// (VHBA_CRASH_AFTER=<step>:<n>, operator/crash.ts) and at random moments
// (SIGKILL), then restarted; it must converge to the assignments the planner
// predicts, with no duplicate address on any VM and exactly one claim per
// live disk (none leaked for deleted disks).
// Needs scripts/build-go-tools.sh (kube-apiserver, etcd, kubectl).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApiServer, type TestApiServer } from '../k8s/apiserver.ts';
import { kubectlOk } from '../k8s/kubectl.ts';
import { missingToolsReason } from '../k8s/tools.ts';
import { CRASH_EXIT_CODE } from '../../operator/crash.ts';
import { CRD_NAME } from '../../operator/crd.ts';
import type { DiskObject } from '../../operator/objects.ts';
import type { KubeHttp } from '../../operator/stores/kube-http.ts';
import {
  OperatorProcess, REPO, createDisks, createNamespace, kubeClient, listDisks, listPvcs, predict, startPvcProtectionController, waitFor,
} from '../../operator/testing/harness.ts';

const skipReason = missingToolsReason(['kube-apiserver', 'etcd', 'kubectl']);

const SPECS = [
  { name: 'a-sys', spec: { vmName: 'vm1', capacity: '1Mi', storageClassName: 'vhba' } },
  { name: 'b-data', spec: { vmName: 'vm1', capacity: '2Mi', storageClassName: 'vhba', address: { target: 2, lun: 5 } } },
  { name: 'c-fast', spec: { vmName: 'vm1', capacity: '1Mi', storageClassName: 'vhba', ioProfile: 'dedicated' } },
  { name: 'd-log', spec: { vmName: 'vm1', capacity: '1Mi', source: { file: { path: 'vm1/log.img' } } } },
  { name: 'e-sys', spec: { vmName: 'vm2', capacity: '1Mi', storageClassName: 'vhba' } },
  { name: 'f-data', spec: { vmName: 'vm2', capacity: '1Mi', storageClassName: 'vhba', serial: 'F-DATA' } },
  { name: 'g-more', spec: { vmName: 'vm2', capacity: '1Mi', storageClassName: 'vhba' } },
  { name: 'h-more', spec: { vmName: 'vm2', capacity: '1Mi', storageClassName: 'vhba' } },
  // More plain disks, so that a crash leaves work behind even though up to
  // 8 disks per VM are in flight at once (requests already sent complete).
  ...Array.from({ length: 16 }, (_, i) => ({ name: `z${String(i).padStart(2, '0')}`, spec: { vmName: i % 2 === 0 ? 'vm1' : 'vm2', capacity: '1Mi', storageClassName: 'vhba' } })),
];
const DELETED = ['b-data', 'e-sys', 'g-more', 'z03', 'z04', 'z05'];

/** Checks the converged world of `ns` against the prediction for `all` (the disks as first created). */
async function checkConverged(http: KubeHttp, ns: string, predicted: ReturnType<typeof predict>, deleted: readonly string[]): Promise<void> {
  const live = SPECS.filter((s) => !deleted.includes(s.name)).length;
  const disks = await waitFor(`${ns}: ${live} disks Assigned, ${live} claims`, async () => {
    const l = await listDisks(http, ns);
    const pvcs = await listPvcs(http, ns);
    return l.length === live && l.every((d) => d.status?.phase === 'Assigned' && d.metadata.deletionTimestamp === undefined) && pvcs.length === live ? l : undefined;
  }, 60_000);
  const perVm = new Map<string, string[]>();
  for (const d of disks) {
    expect(d.status, d.metadata.name).toMatchObject(predicted.get(`${ns}/${d.metadata.name}`) ?? {});
    perVm.set(d.spec.vmName, [...(perVm.get(d.spec.vmName) ?? []), d.status?.scsiAddress ?? '']);
  }
  for (const list of perVm.values()) expect(new Set(list).size).toBe(list.length);
  const pvcs = await listPvcs(http, ns);
  for (const d of disks) {
    const mine = pvcs.filter((p) => p.metadata.ownerReferences?.[0]?.uid === d.metadata.uid);
    expect(mine.map((p) => p.metadata.name)).toEqual([`vhba-${d.metadata.uid}`]);
    expect(mine[0]?.metadata.annotations?.['vhba.io/serial']).toBe(d.status?.serial);
  }
}

/** Runs a crashing operator; resolves with its exit code (or 'converged' if the step never came). */
async function runUntilCrash(kubeconfigPath: string, ns: string, crash: string): Promise<number | null | 'converged'> {
  const op = await OperatorProcess.start({ kubeconfigPath, namespace: ns, env: { VHBA_CRASH_AFTER: crash } });
  const code = await Promise.race([op.exited, new Promise<'converged'>((r) => setTimeout(() => r('converged'), 8_000))]);
  if (code === 'converged') await op.stop();
  return code;
}

describe.skipIf(skipReason !== undefined)(`operator crash/restart${skipReason ? ` (skipped: ${skipReason})` : ''}`, () => {
  let cluster: TestApiServer | undefined;
  let http: KubeHttp;
  let pvcProtection: { stop(): void } | undefined;
  const namespaces: string[] = [];

  beforeAll(async () => {
    cluster = await startTestApiServer();
    http = kubeClient(cluster.kubeconfigPath);
    await kubectlOk(cluster.kubeconfigPath, ['apply', '--server-side', '-f', `${REPO}/deploy/helm/vhba/crds/${CRD_NAME}.yaml`]);
    await kubectlOk(cluster.kubeconfigPath, ['wait', '--for=condition=Established', `crd/${CRD_NAME}`, '--timeout=60s']);
    pvcProtection = startPvcProtectionController(http, () => namespaces);
  });

  afterAll(async () => {
    pvcProtection?.stop();
    await cluster?.stop();
  });

  for (const step of ['finalizer-added', 'status-patched', 'claim-created', 'event-recorded'] as const) {
    it(`killed after ${step} (1st, then 2nd), restarted: converges to the predicted assignments`, async () => {
      const kc = cluster!.kubeconfigPath;
      const ns = `crash-${step}`;
      namespaces.push(ns);
      await createNamespace(http, ns);
      await createDisks(http, ns, SPECS, 4);
      const predicted = predict(await listDisks(http, ns));
      expect(await runUntilCrash(kc, ns, `${step}:1`)).toBe(CRASH_EXIT_CODE);
      expect(await runUntilCrash(kc, ns, `${step}:2`)).toBe(CRASH_EXIT_CODE);
      const op = await OperatorProcess.start({ kubeconfigPath: kc, namespace: ns });
      try {
        await checkConverged(http, ns, predicted, []);
      } finally {
        await op.stop();
      }
    });
  }

  for (const step of ['claim-deleted', 'finalizer-removed'] as const) {
    it(`deleting: killed after ${step}, restarted: deleted disks released, their claims gone, the rest untouched`, async () => {
      const kc = cluster!.kubeconfigPath;
      const ns = `crash-${step}`;
      namespaces.push(ns);
      await createNamespace(http, ns);
      await createDisks(http, ns, SPECS, 4);
      const predicted = predict(await listDisks(http, ns));
      const first = await OperatorProcess.start({ kubeconfigPath: kc, namespace: ns });
      await checkConverged(http, ns, predicted, []);
      await first.stop();
      for (const name of DELETED) await kubectlOk(kc, ['delete', 'vdisk', name, '-n', ns, '--wait=false']);
      expect(await runUntilCrash(kc, ns, `${step}:1`)).toBe(CRASH_EXIT_CODE);
      expect(await runUntilCrash(kc, ns, `${step}:1`)).toBe(CRASH_EXIT_CODE);
      const op = await OperatorProcess.start({ kubeconfigPath: kc, namespace: ns });
      try {
        await checkConverged(http, ns, predicted, DELETED);
      } finally {
        await op.stop();
      }
    });
  }

  it('SIGKILLed at random moments while disks come and go: converges, no duplicates, no leaks', async () => {
    const kc = cluster!.kubeconfigPath;
    const ns = 'crash-random';
    namespaces.push(ns);
    await createNamespace(http, ns);
    await createDisks(http, ns, SPECS, 4);
    const predicted = predict(await listDisks(http, ns));
    let deletedSoFar = 0;
    for (let round = 0; round < 6; round++) {
      const op = await OperatorProcess.start({ kubeconfigPath: kc, namespace: ns });
      await new Promise((r) => setTimeout(r, 50 + Math.floor(Math.random() * 400)));
      if (round === 2) {
        for (const name of DELETED) await kubectlOk(kc, ['delete', 'vdisk', name, '-n', ns, '--wait=false']);
        deletedSoFar = DELETED.length;
      }
      await op.kill();
    }
    const op = await OperatorProcess.start({ kubeconfigPath: kc, namespace: ns });
    try {
      await checkConverged(http, ns, predicted, deletedSoFar > 0 ? DELETED : []);
    } finally {
      await op.stop();
    }
    const all: DiskObject[] = await listDisks(http, ns);
    expect(all.every((d) => d.metadata.finalizers?.length === 1)).toBe(true);
  });
});
