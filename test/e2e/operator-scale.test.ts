// Scale against a real kube-apiserver: 1,000 VirtualDisks over 50 VMs, created
// while the operator is down, then the operator started: time until every
// disk is Assigned with its claim, and the operator's resident memory (peak
// sampled from /proc every 200 ms, and at the end). The numbers are printed;
// the test asserts correctness (predicted assignments, no duplicates) and a
// generous time bound.
// Needs scripts/build-go-tools.sh (kube-apiserver, etcd, kubectl).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApiServer, type TestApiServer } from '../k8s/apiserver.ts';
import { kubectlOk } from '../k8s/kubectl.ts';
import { missingToolsReason } from '../k8s/tools.ts';
import { CRD_NAME } from '../../operator/crd.ts';
import type { KubeHttp } from '../../operator/stores/kube-http.ts';
import { OperatorProcess, REPO, createDisks, createNamespace, kubeClient, listDisks, listPvcs, predict, waitFor } from '../../operator/testing/harness.ts';

const skipReason = missingToolsReason(['kube-apiserver', 'etcd', 'kubectl']);
const DISKS = Number(process.env['VHBA_SCALE_DISKS'] ?? 1000);
const VMS = 50;

describe.skipIf(skipReason !== undefined)(`operator at scale${skipReason ? ` (skipped: ${skipReason})` : ''}`, () => {
  let cluster: TestApiServer | undefined;
  let http: KubeHttp;

  beforeAll(async () => {
    cluster = await startTestApiServer();
    http = kubeClient(cluster.kubeconfigPath);
    await kubectlOk(cluster.kubeconfigPath, ['apply', '--server-side', '-f', `${REPO}/deploy/helm/vhba/crds/${CRD_NAME}.yaml`]);
    await kubectlOk(cluster.kubeconfigPath, ['wait', '--for=condition=Established', `crd/${CRD_NAME}`, '--timeout=60s']);
  });

  afterAll(async () => {
    await cluster?.stop();
  });

  it(`${DISKS} VirtualDisks over ${VMS} VMs converge`, async () => {
    await createNamespace(http, 'scale');
    const t0 = Date.now();
    await createDisks(http, 'scale', Array.from({ length: DISKS }, (_, i) => ({
      name: `disk-${String(i).padStart(4, '0')}`,
      spec: { vmName: `vm-${String(i % VMS).padStart(2, '0')}`, capacity: '1Gi', storageClassName: 'vhba', ...(i % 97 === 0 ? { ioProfile: 'dedicated' } : {}) },
    })));
    const createdMs = Date.now() - t0;

    const started = Date.now();
    const op = await OperatorProcess.start({ kubeconfigPath: cluster!.kubeconfigPath, namespace: 'scale' });
    const syncedMs = Date.now() - started;
    let disks;
    try {
      disks = await waitFor('every disk Assigned with its claim', async () => {
        const l = await listDisks(http, 'scale');
        if (l.length !== DISKS || l.some((d) => d.status?.phase !== 'Assigned')) return undefined;
        return (await listPvcs(http, 'scale')).length === DISKS ? l : undefined;
      }, 600_000, 1_000);
      const convergedMs = Date.now() - started;
      const endRssKb = op.rssKb();
      const metrics = (await op.get('/metrics')).text;
      const reconciles = /vhba_operator_reconcile_duration_seconds_count (\d+)/.exec(metrics)?.[1];
      const conflicts = /vhba_operator_conflicts_total (\d+)/.exec(metrics)?.[1];
      console.log([
        `operator scale: ${DISKS} disks / ${VMS} VMs`,
        `  created via API in ${createdMs} ms (operator down)`,
        `  operator start → caches synced: ${syncedMs} ms`,
        `  operator start → all Assigned + ${DISKS} PVCs: ${convergedMs} ms`,
        `  operator RSS: peak ${(op.peakRssKb / 1024).toFixed(1)} MiB, after convergence ${(endRssKb / 1024).toFixed(1)} MiB`,
        `  VM reconciles ${reconciles}, conflicts ${conflicts}`,
      ].join('\n'));
      expect(convergedMs).toBeLessThan(600_000);
    } finally {
      await op.stop();
    }
    const predicted = predict(disks);
    const seen = new Set<string>();
    for (const d of disks) {
      expect(d.status).toMatchObject(predicted.get(`scale/${d.metadata.name}`) ?? { missing: true });
      const at = `${d.spec.vmName}@${d.status?.scsiAddress}`;
      expect(seen.has(at)).toBe(false);
      seen.add(at);
    }
  });
});
