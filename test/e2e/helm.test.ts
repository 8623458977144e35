// The Helm chart (deploy/helm/vhba) against the real helm and a real
// kube-apiserver + etcd:
//  - helm lint; helm template for the default values and two other value sets;
//  - every rendered manifest applied with server-side dry-run (CRDs first),
//    the VolumeSnapshotClass only where the snapshot API exists;
//  - values that break values.schema.json (or the chart's own checks) refused
//    with a message naming the value;
//  - the operator and the CSI controller started as processes from the
//    rendered Deployments' command, args and env (in-pod paths mapped to temp
//    directories), the operator with its own ServiceAccount's RBAC: proves the
//    chart's flags match the binaries and its RBAC covers what they do.
// Needs scripts/build-go-tools.sh to have built helm, kube-apiserver, etcd, kubectl.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { startTestApiServer, type TestApiServer } from '../k8s/apiserver.ts';
import { kubectl, kubectlOk } from '../k8s/kubectl.ts';
import { freePort } from '../k8s/process.ts';
import { REPO_ROOT, missingToolsReason, toolPath } from '../k8s/tools.ts';
import { createClient } from '../../protos/grpc.ts';
import { Controller, Identity } from '../../protos/gen/csi/v1/csi_pb.ts';

const helmSkip = missingToolsReason(['helm']);
const clusterSkip = missingToolsReason(['helm', 'kube-apiserver', 'etcd', 'kubectl']);
if (helmSkip) console.warn(`helm: SKIPPED, ${helmSkip}`);
else if (clusterSkip) console.warn(`helm (API server part): SKIPPED, ${clusterSkip}`);

const CHART = join(REPO_ROOT, 'deploy/helm/vhba');
const VHBA = join(REPO_ROOT, 'bin/vhba');
const NAMESPACE = 'vhba-system';
const RELEASE = 'vhba';
const SNAPSHOT_CLASS_API = 'snapshot.storage.k8s.io/v1/VolumeSnapshotClass';

/** Value sets rendered and applied: defaults and two others. */
const VALUE_SETS: Record<string, Record<string, unknown>> = {
  default: {},
  namespaced: {
    operator: { watchNamespace: 'vms', leaderElection: false, replicas: 1, workers: 2, metricsPort: 9090 },
    controller: { leaderElection: false, stateStore: 'directory', podDisruptionBudget: { enabled: false, maxUnavailable: 1 } },
    sidecars: { snapshotter: { enabled: false, image: 'registry.k8s.io/sig-storage/csi-snapshotter:v8.2.1' } },
    storageClass: { isDefault: false, name: 'vhba-fast', reclaimPolicy: 'Retain', volumeBindingMode: 'Immediate' },
    node: { socketDir: '/var/run/vhba', kubeletDir: '/var/lib/k0s/kubelet' },
    logLevel: 'debug',
  },
  ha: {
    operator: { replicas: 3, tolerations: [{ key: 'node-role.kubernetes.io/control-plane', operator: 'Exists', effect: 'NoSchedule' }] },
    controller: { replicas: 2, dataNodeName: 'node-a', nodeSelector: { 'vhba.io/data': 'true' } },
    image: { repository: 'registry.example.com/vhba/vhba', tag: '0.1.0-rc1', pullPolicy: 'Always' },
    imagePullSecrets: [{ name: 'regcred' }],
    engine: { hostDevicePassthrough: true },
  },
};

/** Runs a program; never throws for a non-zero exit. */
function run(cmd: string, args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolveRun, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env }, timeout: 120_000 });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.once('error', reject);
    child.once('close', (code) => resolveRun({ code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }));
  });
}

let helmHome = '';
/** helm with its caches and config in a temp dir. */
function helm(args: readonly string[]) {
  return run(toolPath('helm'), args, {
    HELM_CACHE_HOME: join(helmHome, 'cache'), HELM_CONFIG_HOME: join(helmHome, 'config'), HELM_DATA_HOME: join(helmHome, 'data'),
  });
}

/** Writes a values file and returns its path. */
function valuesFile(name: string, values: Record<string, unknown>): string {
  const path = join(helmHome, `values-${name}.json`);
  writeFileSync(path, JSON.stringify(values));
  return path;
}

/** `helm template` output for a value set (throws with helm's stderr on failure). */
async function render(name: string, values: Record<string, unknown>, extra: readonly string[] = []): Promise<string> {
  const res = await helm(['template', RELEASE, CHART, '--namespace', NAMESPACE, '-f', valuesFile(name, values), ...extra]);
  if (res.code !== 0) throw new Error(`helm template (${name}) exited ${res.code}: ${res.stderr}`);
  return res.stdout;
}

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
  spec?: Record<string, unknown>;
}

/** The objects in a multi-document YAML stream. */
function objects(yamlText: string): K8sObject[] {
  return parseAllDocuments(yamlText).map((d) => d.toJS() as K8sObject | null).filter((o): o is K8sObject => o !== null);
}

interface Container {
  name: string;
  command?: string[];
  args?: string[];
  env?: { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[];
  volumeMounts?: { name: string; mountPath: string }[];
}

/** A container of a rendered workload. */
function container(objs: K8sObject[], kind: string, name: string, containerName: string): Container {
  const obj = objs.find((o) => o.kind === kind && o.metadata.name === name);
  if (!obj) throw new Error(`no ${kind} ${name} rendered`);
  const pod = (obj.spec as { template: { spec: { containers: Container[] } } }).template.spec;
  const c = pod.containers.find((x) => x.name === containerName);
  if (!c) throw new Error(`${kind} ${name} has no container ${containerName}`);
  return c;
}

/** The container's env with fieldRefs resolved as kubelet would for `pod`. */
function resolveEnv(c: Container, pod: Record<string, string>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const e of c.env ?? []) {
    if (e.value !== undefined) env[e.name] = e.value;
    else if (e.valueFrom?.fieldRef) {
      const v = pod[e.valueFrom.fieldRef.fieldPath];
      if (v === undefined) throw new Error(`test does not know fieldRef ${e.valueFrom.fieldRef.fieldPath}`);
      env[e.name] = v;
    } else throw new Error(`env ${e.name}: unsupported source`);
  }
  return env;
}

/** Kubelet's $(VAR) expansion of command/args. */
function expand(arg: string, env: Record<string, string>): string {
  return arg.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, v: string) => env[v] ?? m);
}

/** Replaces in-pod mount paths with temp dirs (longest mount first). */
function mapPaths(arg: string, mounts: Map<string, string>): string {
  const sorted = [...mounts.keys()].sort((a, b) => b.length - a.length);
  for (const m of sorted) {
    const at = arg.indexOf(m);
    if (at >= 0 && (arg.length === at + m.length || arg[at + m.length] === '/')) return arg.slice(0, at) + mounts.get(m)! + arg.slice(at + m.length);
  }
  return arg;
}

/** Maps each of a container's volume mounts to a fresh directory under `root`. */
function tempMounts(c: Container, root: string): Map<string, string> {
  const mounts = new Map<string, string>();
  for (const m of c.volumeMounts ?? []) {
    const dir = join(root, m.name);
    mkdirSync(dir, { recursive: true });
    mounts.set(m.mountPath, dir);
  }
  return mounts;
}

/** The command line a rendered container would run, as `bin/vhba` argv. */
function vhbaArgv(c: Container, env: Record<string, string>, mounts: Map<string, string>): string[] {
  expect(c.command).toEqual(['vhba']);
  return (c.args ?? []).map((a) => mapPaths(expand(a, env), mounts));
}

/** A started bin/vhba process with its output collected. */
interface Proc { child: ChildProcess; output: () => string }
function startVhba(argv: string[], env: Record<string, string>): Proc {
  const child = spawn(VHBA, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: helmHome, ...env } });
  const chunks: Buffer[] = [];
  child.stdout?.on('data', (c: Buffer) => chunks.push(c));
  child.stderr?.on('data', (c: Buffer) => chunks.push(c));
  return { child, output: () => Buffer.concat(chunks).toString() };
}

async function stopProc(p: Proc | undefined): Promise<void> {
  if (!p || p.child.exitCode !== null || p.child.signalCode !== null) return;
  const exited = new Promise((r) => p.child.once('exit', r));
  p.child.kill('SIGTERM');
  const timer = setTimeout(() => p.child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

/** Polls `check` until true; throws with `what` and the process output. */
async function waitFor(what: string, check: () => Promise<boolean> | boolean, p: Proc, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await Promise.resolve().then(check).catch(() => false)) return;
    if (p.child.exitCode !== null) throw new Error(`${what}: process exited ${p.child.exitCode}:\n${p.output()}`);
    if (Date.now() > deadline) throw new Error(`${what}: timed out:\n${p.output()}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

function httpStatus(url: string): Promise<number> {
  return new Promise((resolveStatus, reject) => {
    const req = get(url, { timeout: 3_000 }, (res) => { res.resume(); resolveStatus(res.statusCode ?? 0); });
    req.once('timeout', () => req.destroy(new Error('timeout')));
    req.once('error', reject);
  });
}

const rendered: Record<string, string> = {};

/** Renders every value set once (both describe blocks use them). */
async function renderAll(): Promise<void> {
  if (!helmHome) helmHome = mkdtempSync(join(tmpdir(), 'vhba-helm-'));
  for (const [name, values] of Object.entries(VALUE_SETS)) rendered[name] ??= await render(name, values);
}

describe.skipIf(helmSkip !== undefined)(`helm chart: lint, template, schema, processes${helmSkip ? ` (skipped: ${helmSkip})` : ''}`, () => {
  beforeAll(renderAll);

  it('passes helm lint (strict) for every value set', async () => {
    for (const [name, values] of Object.entries(VALUE_SETS)) {
      const res = await helm(['lint', '--strict', CHART, '-f', valuesFile(name, values)]);
      expect(res.stdout + res.stderr, name).toContain('1 chart(s) linted, 0 chart(s) failed');
      expect(res.code, `${name}: ${res.stdout}${res.stderr}`).toBe(0);
    }
  });
  it('renders what each value set asks for', () => {
    const kinds = (name: string) => objects(rendered[name]!).map((o) => `${o.kind}/${o.metadata.name}`).sort();
    expect(kinds('default')).toEqual([
      'CSIDriver/scsi.vhba.io',
      'ClusterRole/vhba-controller', 'ClusterRole/vhba-operator', 'ClusterRole/vhba-operator-attachments',
      'ClusterRoleBinding/vhba-controller', 'ClusterRoleBinding/vhba-operator', 'ClusterRoleBinding/vhba-operator-attachments',
      'DaemonSet/vhba-node', 'Deployment/vhba-controller', 'Deployment/vhba-operator',
      'PodDisruptionBudget/vhba-controller',
      'Role/vhba-controller-leader', 'Role/vhba-controller-state', 'Role/vhba-operator-leader',
      'RoleBinding/vhba-controller-leader', 'RoleBinding/vhba-controller-state', 'RoleBinding/vhba-operator-leader',
      'ServiceAccount/vhba-controller', 'ServiceAccount/vhba-node', 'ServiceAccount/vhba-operator',
      'StorageClass/vhba',
    ]);
    const ns = objects(rendered['namespaced']!);
    expect(ns.find((o) => o.kind === 'RoleBinding' && o.metadata.name === 'vhba-operator')?.metadata.namespace).toBe('vms');
    expect(ns.some((o) => o.kind === 'PodDisruptionBudget' || o.metadata.name.endsWith('-leader') || o.metadata.name.endsWith('-state'))).toBe(false);
    expect(container(ns, 'Deployment', 'vhba-controller', 'csi-controller').args).not.toContain('--state-store=kubernetes');
    const ctrl = (ns.find((o) => o.kind === 'Deployment' && o.metadata.name === 'vhba-controller')!.spec as { template: { spec: { containers: Container[] } } }).template.spec.containers;
    expect(ctrl.map((c) => c.name)).toEqual(['csi-controller', 'csi-provisioner', 'csi-attacher', 'csi-resizer', 'liveness-probe']);
    expect(container(ns, 'DaemonSet', 'vhba-node', 'csi-node').args).toContain('--engine-endpoint=unix:///var/run/vhba/engine.sock');
    const sc = ns.find((o) => o.kind === 'StorageClass') as unknown as Record<string, unknown>;
    expect(sc).toMatchObject({ metadata: { name: 'vhba-fast' }, provisioner: 'scsi.vhba.io', allowVolumeExpansion: true, reclaimPolicy: 'Retain' });
    const ha = objects(rendered['ha']!);
    expect((ha.find((o) => o.kind === 'Deployment' && o.metadata.name === 'vhba-controller')!.spec as { template: { spec: { nodeSelector: unknown } } }).template.spec.nodeSelector)
      .toEqual({ 'vhba.io/data': 'true', 'kubernetes.io/hostname': 'node-a' });
    expect(container(ha, 'Deployment', 'vhba-operator', 'operator')).toMatchObject({ image: 'registry.example.com/vhba/vhba:0.1.0-rc1' });
    // engine.hostDevicePassthrough: privileged with the node's /dev; off by default.
    const engineOf = (name: string) => container(objects(rendered[name]!), 'DaemonSet', 'vhba-node', 'engine') as Container & { securityContext?: Record<string, unknown> };
    expect(engineOf('default').securityContext).toMatchObject({ capabilities: { drop: ['ALL'] }, allowPrivilegeEscalation: false });
    expect(engineOf('default').volumeMounts?.map((m) => m.mountPath)).not.toContain('/dev');
    expect(engineOf('ha').securityContext).toMatchObject({ privileged: true });
    expect(engineOf('ha').volumeMounts).toContainEqual(expect.objectContaining({ mountPath: '/dev', mountPropagation: 'HostToContainer' }));
    const csiDriver = objects(rendered['default']!).find((o) => o.kind === 'CSIDriver')!;
    expect(csiDriver.spec).toMatchObject({ attachRequired: true, podInfoOnMount: true, volumeLifecycleModes: ['Persistent'] });
  });
  it('renders the VolumeSnapshotClass only where the snapshot API exists', async () => {
    expect(rendered['default']).not.toContain('kind: VolumeSnapshotClass');
    const withApi = await render('default', {}, ['--api-versions', SNAPSHOT_CLASS_API]);
    expect(objects(withApi).find((o) => o.kind === 'VolumeSnapshotClass')).toMatchObject({ metadata: { name: 'vhba' }, driver: 'scsi.vhba.io', deletionPolicy: 'Delete' });
    const noSnapshotter = await render('namespaced', VALUE_SETS['namespaced']!, ['--api-versions', SNAPSHOT_CLASS_API]);
    expect(noSnapshotter).not.toContain('kind: VolumeSnapshotClass');
  });
  it('refuses values that break values.schema.json or the chart rules, naming the value', async () => {
    // helm prints schema errors as "- at '/operator/replicas': minimum: got 0, want 1" (jsonschema v6).
    const cases: [string[], RegExp][] = [
      [['--set', 'operator.replicas=0'], /operator[./]replicas'?:? .*minimum/i],
      [['--set', 'bogus=1'], /additional propert(y|ies) '?bogus'? not allowed/i],
      [['--set', 'image.tag=latest'], /image[./]tag/],
      [['--set', 'logLevel=loud'], /logLevel/],
      [['--set', 'node.socketDir=run/vhba'], /node[./]socketDir/],
      [['--set', 'sidecars.provisioner.image=registry.k8s.io/sig-storage/csi-provisioner'], /sidecars[./]provisioner[./]image/],
      [['--set', 'operator.leaderElection=false', '--set', 'operator.replicas=3'], /operator\.replicas > 1 needs operator\.leaderElection/],
    ];
    for (const [args, message] of cases) {
      const res = await helm(['template', RELEASE, CHART, ...args]);
      expect(res.code, args.join(' ')).not.toBe(0);
      expect(res.stderr, args.join(' ')).toMatch(message);
      expect(res.stdout, args.join(' ')).toBe('');
    }
  });
  it('the CSI controller (directory store) runs from the rendered Deployment and answers as the chart\'s CSIDriver', async () => {
    const objs = objects(rendered['namespaced']!);
    const c = container(objs, 'Deployment', 'vhba-controller', 'csi-controller');
    const root = mkdtempSync(join(tmpdir(), 'vhba-helm-csi-'));
    try {
      const mounts = tempMounts(c, root);
      const env = resolveEnv(c, { 'spec.nodeName': 'node-a' });
      const argv = vhbaArgv(c, env, mounts);
      expect(argv).toContain('--node-id=node-a');
      const socket = join(mounts.get('/csi')!, 'csi.sock');
      expect(argv).toContain(`--endpoint=unix://${socket}`);
      const csi = startVhba(argv, env);
      try {
        await waitFor('CSI socket', () => existsSync(socket), csi);
        const identity = createClient(Identity, `unix://${socket}`);
        try {
          const info = await identity.getPluginInfo({}, { deadlineMs: 30_000 });
          const driver = objs.find((o) => o.kind === 'CSIDriver')!;
          expect(info.name).toBe(driver.metadata.name);
          // The sidecars reach the plugin at the address the chart gives them.
          const provisioner = container(objs, 'Deployment', 'vhba-controller', 'csi-provisioner');
          const address = provisioner.env?.find((e) => e.name === 'ADDRESS')?.value;
          expect(`unix://${address}`).toBe(c.args?.find((a) => a.startsWith('--endpoint='))?.slice('--endpoint='.length));
        } finally {
          identity.close();
        }
      } finally {
        await stopProc(csi);
      }
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('the node DaemonSet\'s engine and CSI node plugin run from their rendered args and find each other', async () => {
    const objs = objects(rendered['default']!);
    const engineC = container(objs, 'DaemonSet', 'vhba-node', 'engine');
    const nodeC = container(objs, 'DaemonSet', 'vhba-node', 'csi-node');
    const root = mkdtempSync(join(tmpdir(), 'vhba-helm-node-'));
    const mounts = new Map<string, string>();
    for (const m of [...(engineC.volumeMounts ?? []), ...(nodeC.volumeMounts ?? [])]) {
      const dir = join(root, m.name);
      mkdirSync(dir, { recursive: true });
      mounts.set(m.mountPath, dir);
    }
    // The two containers share the socket directory by the same mount.
    expect(engineC.volumeMounts?.find((m) => m.name === 'vhba-run')?.mountPath).toBe(nodeC.volumeMounts?.find((m) => m.name === 'vhba-run')?.mountPath);
    let engine: Proc | undefined;
    let node: Proc | undefined;
    try {
      const engineArgv = vhbaArgv(engineC, {}, mounts);
      const control = engineArgv.find((a) => a.startsWith('--control-socket='))!.slice('--control-socket='.length);
      engine = startVhba(engineArgv, {});
      await waitFor('engine control socket', () => existsSync(control), engine);
      const env = resolveEnv(nodeC, { 'spec.nodeName': 'node-a' });
      const nodeArgv = vhbaArgv(nodeC, env, mounts);
      expect(nodeArgv).toContain(`--engine-endpoint=unix://${control}`);
      const socket = join(mounts.get('/csi')!, 'csi.sock');
      node = startVhba(nodeArgv, env);
      await waitFor('CSI node socket', () => existsSync(socket), node);
      const identity = createClient(Identity, `unix://${socket}`);
      try {
        expect((await identity.getPluginInfo({}, { deadlineMs: 30_000 })).name).toBe('scsi.vhba.io');
        const probe = await identity.probe({}, { deadlineMs: 30_000 });
        expect(probe.ready ?? true).toBe(true);
      } finally {
        identity.close();
      }
    } finally {
      await stopProc(node);
      await stopProc(engine);
      rmSync(root, { recursive: true, force: true });
    }
  });
});

describe.skipIf(clusterSkip !== undefined)(`helm chart on the real API server${clusterSkip ? ` (skipped: ${clusterSkip})` : ''}`, () => {
  let cluster: TestApiServer | undefined;
  const kc = (): string => {
    if (!cluster) throw new Error('API server not started');
    return cluster.kubeconfigPath;
  };

  beforeAll(async () => {
    await renderAll();
    cluster = await startTestApiServer();
    await kubectlOk(kc(), ['apply', '--server-side', '--field-manager=vhba-helm-test', '-f', join(CHART, 'crds')]);
    await kubectlOk(kc(), ['wait', '--for=condition=Established', 'crd/virtualdisks.vhba.io', '--timeout=60s']);
    for (const ns of [NAMESPACE, 'vms']) await kubectlOk(kc(), ['create', 'namespace', ns]);
  });

  afterAll(async () => {
    await cluster?.stop();
  });

  it('every rendered manifest passes server-side dry-run apply on the real API server', async () => {
    for (const [name, text] of Object.entries(rendered)) {
      const res = await kubectl(kc(), ['apply', '--server-side', '--dry-run=server', '--field-manager=helm', '-f', '-'], { input: text });
      expect(res.stderr, name).toBe('');
      expect(res.code, name).toBe(0);
      expect(res.stdout.trim().split('\n').length, name).toBe(objects(text).length);
    }
    // --validate: helm reads the API server's capabilities (no snapshot CRDs: no VolumeSnapshotClass) and validates.
    const validated = await helm(['template', RELEASE, CHART, '--namespace', NAMESPACE, '--validate', '--kubeconfig', kc()]);
    expect(validated.code, validated.stderr).toBe(0);
    expect(validated.stdout).not.toContain('kind: VolumeSnapshotClass');
  });
  it('with the snapshot API served, helm sees it and the VolumeSnapshotClass passes the dry run', async () => {
    // A stand-in for external-snapshotter's CRD (same group, version, kind;
    // schema left open): enough for discovery and for the dry run.
    const stub = `
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: volumesnapshotclasses.snapshot.storage.k8s.io
  # *.k8s.io groups need this (KEP-1111); the real CRD carries one too.
  annotations: { api-approved.kubernetes.io: "https://github.com/kubernetes-csi/external-snapshotter/pull/419" }
spec:
  group: snapshot.storage.k8s.io
  scope: Cluster
  names: { plural: volumesnapshotclasses, singular: volumesnapshotclass, kind: VolumeSnapshotClass, listKind: VolumeSnapshotClassList }
  versions:
    - name: v1
      served: true
      storage: true
      schema: { openAPIV3Schema: { type: object, x-kubernetes-preserve-unknown-fields: true } }
`;
    await kubectlOk(kc(), ['apply', '--server-side', '--field-manager=vhba-helm-test', '-f', '-'], { input: stub });
    await kubectlOk(kc(), ['wait', '--for=condition=Established', 'crd/volumesnapshotclasses.snapshot.storage.k8s.io', '--timeout=60s']);
    const res = await helm(['template', RELEASE, CHART, '--namespace', NAMESPACE, '--validate', '--kubeconfig', kc()]);
    expect(res.code, res.stderr).toBe(0);
    const objs = objects(res.stdout);
    expect(objs.find((o) => o.kind === 'VolumeSnapshotClass')?.metadata.name).toBe('vhba');
    const applied = await kubectl(kc(), ['apply', '--server-side', '--dry-run=server', '--field-manager=helm', '-f', '-'], { input: res.stdout });
    expect(applied.stderr).toBe('');
    expect(applied.stdout).toContain('volumesnapshotclass.snapshot.storage.k8s.io/vhba serverside-applied (server dry run)');
  });

  it('a bad manifest is caught by the dry run (the check can fail)', async () => {
    const broken = rendered['default']!.replace('attachRequired: true', 'attachRequired: "maybe"');
    const res = await kubectl(kc(), ['apply', '--server-side', '--dry-run=server', '-f', '-'], { input: broken });
    expect(res.code).not.toBe(0);
    expect(res.stderr).toMatch(/attachRequired/);
  });
  it('the operator runs from the rendered Deployment, with its own ServiceAccount RBAC', async () => {
    if (!cluster) throw new Error('API server not started');
    // Install the chart's objects for real (RBAC must exist for the service account).
    await kubectlOk(kc(), ['apply', '--server-side', '--field-manager=helm', '-f', '-'], { input: rendered['default']! });
    const objs = objects(rendered['default']!);
    const c = container(objs, 'Deployment', 'vhba-operator', 'operator');
    const env = resolveEnv(c, { 'metadata.namespace': NAMESPACE, 'metadata.name': 'vhba-operator-7d9f-abcde' });
    const port = await freePort();
    const argv = vhbaArgv(c, env, new Map()).map((a) => (a.startsWith('--metrics-addr=') ? `--metrics-addr=127.0.0.1:${port}` : a));
    expect(argv).toContain('--leader-elect');
    // In the pod: the in-cluster service account. Here: a client certificate for the same user name.
    const saKubeconfig = cluster.kubeconfigFor(`system:serviceaccount:${NAMESPACE}:vhba-operator`, ['system:serviceaccounts', `system:serviceaccounts:${NAMESPACE}`]);
    expect(argv[0]).toBe('operator');
    const operator = startVhba([argv[0]!, '--kubeconfig', saKubeconfig, ...argv.slice(1)], env);
    try {
      await waitFor('operator /readyz', async () => (await httpStatus(`http://127.0.0.1:${port}/readyz`)) === 200, operator);
      expect(await httpStatus(`http://127.0.0.1:${port}/healthz`)).toBe(200);
      // It holds the Lease the chart named, as the pod the env named.
      const lease = JSON.parse(await kubectlOk(kc(), ['get', 'lease', 'vhba-operator', '-n', NAMESPACE, '-o', 'json'])) as { spec: { holderIdentity?: string } };
      expect(lease.spec.holderIdentity).toBe('vhba-operator-7d9f-abcde');
      // It reconciles with the chart's RBAC: a VirtualDisk gets the finalizer
      // (patch virtualdisks) and a status (patch virtualdisks/status).
      await kubectlOk(kc(), ['apply', '--server-side', '--field-manager=vhba-helm-test', '-n', 'vms', '-f', join(REPO_ROOT, 'examples/demo-system.yaml')]);
      await waitFor('VirtualDisk finalizer and status', async () => {
        const disk = JSON.parse(await kubectlOk(kc(), ['get', 'virtualdisk', 'demo-system', '-n', 'vms', '-o', 'json'])) as { metadata: { finalizers?: string[] }; status?: unknown };
        return (disk.metadata.finalizers ?? []).includes('vhba.io/release-address') && disk.status !== undefined;
      }, operator, 60_000);
      expect(operator.output()).not.toMatch(/forbidden/i);
    } finally {
      await stopProc(operator);
    }
  });

  it('the CSI controller (Kubernetes store) runs from the rendered Deployment with its ServiceAccount RBAC', async () => {
    if (!cluster) throw new Error('API server not started');
    await kubectlOk(kc(), ['apply', '--server-side', '--field-manager=helm', '-f', '-'], { input: rendered['default']! });
    const objs = objects(rendered['default']!);
    const c = container(objs, 'Deployment', 'vhba-controller', 'csi-controller');
    expect(c.args).toContain(`--state-namespace=${NAMESPACE}`);
    const root = mkdtempSync(join(tmpdir(), 'vhba-helm-csi-kube-'));
    try {
      const mounts = tempMounts(c, root);
      const env = resolveEnv(c, { 'spec.nodeName': 'node-a' });
      const argv = vhbaArgv(c, env, mounts);
      const socket = join(mounts.get('/csi')!, 'csi.sock');
      // In the pod: the in-cluster service account. Here: a client certificate for the same user name.
      const saKubeconfig = cluster.kubeconfigFor(`system:serviceaccount:${NAMESPACE}:vhba-controller`, ['system:serviceaccounts', `system:serviceaccounts:${NAMESPACE}`]);
      const csi = startVhba([argv[0]!, '--kubeconfig', saKubeconfig, ...argv.slice(1)], env);
      try {
        await waitFor('CSI socket', () => existsSync(socket), csi);
        const controller = createClient(Controller, `unix://${socket}`);
        try {
          const created = await controller.createVolume({
            name: 'helm-kube-store',
            capacityRange: { requiredBytes: 16n << 20n },
            volumeCapabilities: [{ accessType: { case: 'block', value: {} }, accessMode: { mode: 1 } }],
          }, { deadlineMs: 30_000 });
          const id = created.volume?.volumeId ?? '';
          expect(id).not.toBe('');
          // The record lives in a ConfigMap of the release namespace, written with the chart's Role.
          const cms = JSON.parse(await kubectlOk(kc(), ['get', 'configmaps', '-n', NAMESPACE, '-l', 'app.kubernetes.io/managed-by=vhba', '-o', 'json'])) as { items: { data?: Record<string, string> }[] };
          expect(cms.items.some((cm) => (cm.data?.['record.json'] ?? '').includes(id))).toBe(true);
          await controller.deleteVolume({ volumeId: id }, { deadlineMs: 30_000 });
        } finally {
          controller.close();
        }
        expect(csi.output()).not.toMatch(/forbidden/i);
      } finally {
        await stopProc(csi);
      }
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});

afterAll(() => {
  if (helmHome) rmSync(helmHome, { recursive: true, force: true });
});
