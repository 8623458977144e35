// KubernetesStore (csi/stores/kubernetes.ts) against the real kube-apiserver +
// etcd (test/k8s): the RecordStore contract the directory store also passes,
// the ConfigMap layout, restart, and no lost update under concurrent writers.
// Needs scripts/build-go-tools.sh to have built kube-apiserver and etcd.
import { CoreV1Api, KubeConfig, RbacAuthorizationV1Api, type V1PolicyRule } from '@kubernetes/client-node';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient } from '../../protos/grpc.ts';
import { Controller, VolumeCapability_AccessMode_Mode } from '../../protos/gen/csi/v1/csi_pb.ts';
import { KubernetesStore, RECORD_DATA_KEY, type RecordKind } from '../../csi/stores/kubernetes.ts';
import { describeRecordStoreContract } from '../../csi/testing/record-store-contract.ts';
import { startTestApiServer, type TestApiServer } from '../k8s/apiserver.ts';
import { REPO_ROOT, missingToolsReason } from '../k8s/tools.ts';

const skipReason = missingToolsReason(['kube-apiserver', 'etcd']);

/** The namespaced rules the controller's ServiceAccount needs for
 * --state-store kubernetes (what a chart Role must grant). */
const STATE_STORE_RULES: V1PolicyRule[] = [{ apiGroups: [''], resources: ['configmaps'], verbs: ['get', 'list', 'watch', 'create', 'update', 'delete'] }];
if (skipReason) console.warn(`csi-kube-store: SKIPPED, ${skipReason}`);

describe.skipIf(skipReason !== undefined)(`KubernetesStore on a real API server${skipReason ? ` (skipped: ${skipReason})` : ''}`, () => {
  let cluster: TestApiServer | undefined;
  const namespaces = new Set<string>();

  /** A fresh KubeConfig (a fresh client: nothing shared between "processes"). */
  const kubeConfig = (): KubeConfig => {
    if (!cluster) throw new Error('API server not started');
    const kc = new KubeConfig();
    kc.loadFromFile(cluster.kubeconfigPath);
    return kc;
  };
  const core = (): CoreV1Api => kubeConfig().makeApiClient(CoreV1Api);

  async function ensureNamespace(name: string): Promise<string> {
    if (namespaces.has(name)) return name;
    await core().createNamespace({ body: { metadata: { name } } });
    namespaces.add(name);
    return name;
  }

  async function openStore<T extends { id: string }>(namespace: string, kind: RecordKind = 'volume'): Promise<KubernetesStore<T>> {
    return new KubernetesStore<T>({ kubeConfig: kubeConfig(), namespace: await ensureNamespace(namespace), kind });
  }

  beforeAll(async () => {
    const t0 = Date.now();
    cluster = await startTestApiServer();
    console.log(`csi-kube-store: etcd + kube-apiserver ready in ${Date.now() - t0} ms at ${cluster.server}`);
  });

  afterAll(async () => {
    await cluster?.stop();
  });

  describe('RecordStore contract', () => describeRecordStoreContract((label) => openStore(`contract-${label}`)));

  it('keeps one labelled ConfigMap per record, kinds apart', async () => {
    const volumes = await openStore<{ id: string; size: number }>('layout', 'volume');
    const snapshots = await openStore<{ id: string; source: string }>('layout', 'snapshot');
    await volumes.put({ id: 'same-id', size: 1 });
    await snapshots.put({ id: 'same-id', source: 'v' });
    const cm = await core().readNamespacedConfigMap({ name: KubernetesStore.configMapName('volume', 'same-id'), namespace: 'layout' });
    expect(cm.metadata?.name).toMatch(/^vhba-volume-[0-9a-f]{64}$/);
    expect(cm.metadata?.labels).toEqual({ 'app.kubernetes.io/managed-by': 'vhba', 'vhba.io/record-kind': 'volume' });
    expect(JSON.parse(cm.data?.[RECORD_DATA_KEY] ?? 'null')).toEqual({ id: 'same-id', size: 1 });
    // An unrelated ConfigMap in the namespace is not a record.
    await core().createNamespacedConfigMap({ namespace: 'layout', body: { metadata: { name: 'unrelated' }, data: { x: 'y' } } });
    expect(await volumes.list()).toEqual([{ id: 'same-id', size: 1 }]);
    expect(await snapshots.list()).toEqual([{ id: 'same-id', source: 'v' }]);
    await volumes.delete('same-id');
    expect(await snapshots.get('same-id')).toEqual({ id: 'same-id', source: 'v' });
  });

  it('survives a restart: a new store instance with a new client sees the records', async () => {
    const before = await openStore<{ id: string; n: number }>('restart2');
    for (let i = 0; i < 5; i++) await before.put({ id: `vol-${i}`, n: i });
    await before.delete('vol-3');
    const after = await openStore<{ id: string; n: number }>('restart2');
    expect(await after.list()).toEqual([0, 1, 2, 4].map((i) => ({ id: `vol-${i}`, n: i })));
  });

  it('loses no update when two writers read-modify-write the same record at once', async () => {
    const a = await openStore<{ id: string; count: number; by: string[] }>('concurrent');
    const b = await openStore<{ id: string; count: number; by: string[] }>('concurrent');
    const rounds = 15;
    const bump = (who: string) => (cur: { id: string; count: number; by: string[] } | undefined) =>
      ({ id: 'counter', count: (cur?.count ?? 0) + 1, by: [...(cur?.by ?? []), who] });
    await Promise.all([
      (async () => { for (let i = 0; i < rounds; i++) await a.update('counter', bump('a')); })(),
      (async () => { for (let i = 0; i < rounds; i++) await b.update('counter', bump('b')); })(),
    ]);
    const final = await a.get('counter');
    expect(final?.count).toBe(2 * rounds);
    expect(final?.by.filter((w) => w === 'a')).toHaveLength(rounds);
    expect(final?.by.filter((w) => w === 'b')).toHaveLength(rounds);
    // Concurrent creates and replaces of other ids neither fail nor clobber each other.
    await Promise.all([...Array(10).keys()].map((i) => (i % 2 ? a : b).put({ id: `r-${i % 5}`, count: i, by: [] })));
    expect((await b.list()).map((r) => r.id)).toEqual(['counter', 'r-0', 'r-1', 'r-2', 'r-3', 'r-4']);
  });

  describe('as a ServiceAccount holding only the state-store Role', () => {
    const ns = 'rbac-sa';
    let saStore: (kind?: RecordKind) => KubernetesStore<{ id: string; n: number }>;
    beforeAll(async () => {
      if (!cluster) throw new Error('API server not started');
      await ensureNamespace(ns);
      const rbac = kubeConfig().makeApiClient(RbacAuthorizationV1Api);
      await rbac.createNamespacedRole({ namespace: ns, body: { metadata: { name: 'vhba-controller-state' }, rules: STATE_STORE_RULES } });
      await rbac.createNamespacedRoleBinding({ namespace: ns, body: {
        metadata: { name: 'vhba-controller-state' },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'vhba-controller-state' },
        subjects: [{ kind: 'ServiceAccount', name: 'vhba-controller', namespace: ns }],
      } });
      // In a pod: the in-cluster token. Here: a client certificate for the same user name.
      const path = cluster.kubeconfigFor(`system:serviceaccount:${ns}:vhba-controller`, ['system:serviceaccounts', `system:serviceaccounts:${ns}`]);
      saStore = (kind = 'volume') => {
        const kc = new KubeConfig();
        kc.loadFromFile(path);
        return new KubernetesStore({ kubeConfig: kc, namespace: ns, kind });
      };
    });

    it('does everything the store does with those rules', async () => {
      const s = saStore();
      await s.put({ id: 'v', n: 1 });
      await s.put({ id: 'v', n: 2 });
      await s.update('v', (cur) => cur && { ...cur, n: cur.n + 1 });
      expect(await s.list()).toEqual([{ id: 'v', n: 3 }]);
      await s.delete('v');
      await s.delete('v');
      expect(await saStore('snapshot').list()).toEqual([]);
    });

    it('reports forbidden outside its namespace instead of treating it as absent', async () => {
      if (!cluster) throw new Error('API server not started');
      await ensureNamespace('rbac-other');
      const kc = new KubeConfig();
      kc.loadFromFile(cluster.kubeconfigFor(`system:serviceaccount:${ns}:vhba-controller`, ['system:serviceaccounts']));
      const other = new KubernetesStore<{ id: string }>({ kubeConfig: kc, namespace: 'rbac-other', kind: 'volume' });
      await expect(other.get('x')).rejects.toThrow(/forbidden|403/i);
      await expect(other.delete('x')).rejects.toThrow(/forbidden|403/i);
    });
  });

  it('vhba csi --state-store kubernetes keeps the controller\'s volumes in the API across a restart', async () => {
    if (!cluster) throw new Error('API server not started');
    const kubeconfigPath = cluster.kubeconfigPath;
    const ns = await ensureNamespace('csi-plugin');
    const root = mkdtempSync(join(tmpdir(), 'vhba-kube-csi-'));
    const socket = join(root, 'csi.sock');
    const argv = (stateDir: string) => [join(REPO_ROOT, 'cmd/csi.ts'), '--mode=controller', `--endpoint=unix://${socket}`, '--node-id=node-a',
      `--state-dir=${join(root, stateDir)}`, `--data-dir=${join(root, 'data')}`, '--state-store=kubernetes', `--state-namespace=${ns}`, `--kubeconfig=${kubeconfigPath}`];
    const start = async (stateDir: string): Promise<ChildProcess> => {
      const child = spawn(process.execPath, argv(stateDir), { stdio: ['ignore', 'ignore', 'pipe'] });
      let err = '';
      child.stderr?.on('data', (c: Buffer) => { err += c.toString(); });
      for (let i = 0; !existsSync(socket); i++) {
        if (child.exitCode !== null || i > 600) throw new Error(`vhba csi did not start (exit ${child.exitCode}): ${err}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      return child;
    };
    const stop = async (child: ChildProcess) => {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    };
    const request = {
      name: 'pvc-kube', capacityRange: { requiredBytes: 8n << 20n },
      volumeCapabilities: [{ accessMode: { mode: VolumeCapability_AccessMode_Mode.SINGLE_NODE_WRITER }, accessType: { case: 'block' as const, value: {} } }],
    };
    try {
      let plugin = await start('state-1');
      let client = createClient(Controller, `unix://${socket}`);
      const created = (await client.createVolume(request, { deadlineMs: 30_000 })).volume!;
      client.close();
      await stop(plugin);
      const stored = await core().listNamespacedConfigMap({ namespace: ns, labelSelector: 'vhba.io/record-kind=volume' });
      expect(stored.items.map((cm) => JSON.parse(cm.data?.[RECORD_DATA_KEY] ?? '{}').id)).toEqual([created.volumeId]);
      expect(existsSync(join(root, 'state-1', 'controller'))).toBe(false);
      // A restart with an empty state directory: the records come from the API.
      plugin = await start('state-2');
      client = createClient(Controller, `unix://${socket}`);
      try {
        expect((await client.createVolume(request, { deadlineMs: 30_000 })).volume!.volumeId).toBe(created.volumeId);
        expect((await client.listVolumes({}, { deadlineMs: 30_000 })).entries.map((e) => e.volume?.volumeId)).toEqual([created.volumeId]);
      } finally {
        client.close();
        await stop(plugin);
      }
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('refuses a record whose ConfigMap is corrupt instead of skipping it', async () => {
    const s = await openStore<{ id: string }>('corrupt');
    await s.put({ id: 'ok' });
    await core().createNamespacedConfigMap({
      namespace: 'corrupt',
      body: {
        metadata: { name: KubernetesStore.configMapName('volume', 'bad'), labels: { 'app.kubernetes.io/managed-by': 'vhba', 'vhba.io/record-kind': 'volume' } },
        data: { [RECORD_DATA_KEY]: '{broken' },
      },
    });
    await expect(s.list()).rejects.toThrow(/unreadable JSON/);
    await expect(s.get('bad')).rejects.toThrow(/unreadable JSON/);
    expect(await s.get('ok')).toEqual({ id: 'ok' });
  });
});
