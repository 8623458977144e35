// Helpers for the operator's end-to-end tests (test/e2e/operator*.test.ts):
// the operator as a child process (`bin/vhba operator`), a JSON client for the
// test API server, the planner's prediction for what is stored, and a
// stand-in for kube-controller-manager's pvc-protection controller (no
// controller-manager runs in the test control plane).
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { KubeConfig } from '@kubernetes/client-node';
import { validateVirtualDisk } from '../api/validate.ts';
import { formatAddress, formatWwn } from '../api/virtualdisk.ts';
import { predictGuestPaths } from '../guest-paths.ts';
import { intentFromDisk } from '../intent.ts';
import { objectKey } from '../objects.ts';
import { planAssignments } from '../planner.ts';
import { KubeHttp, PATCH_TYPES } from '../stores/kube-http.ts';
import { toDiskObject } from '../stores/kubernetes.ts';
import type { DiskObject } from '../objects.ts';

/** The repository root. */
export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** A JSON client for a kubeconfig. */
export function kubeClient(kubeconfigPath: string): KubeHttp {
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfigPath);
  return new KubeHttp(kc);
}

/** Polls `check` every `everyMs` until it returns a value other than undefined. */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 60_000, everyMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last === undefined ? '' : `: ${(last as Error).message}`}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Lists the VirtualDisks of a namespace. */
export async function listDisks(http: KubeHttp, namespace: string): Promise<DiskObject[]> {
  const list = await http.send<{ items: object[] }>({ method: 'GET', path: `/apis/vhba.io/v1alpha1/namespaces/${namespace}/virtualdisks` });
  return list.items.map((raw) => toDiskObject(raw));
}

/** A PersistentVolumeClaim as listed (the fields the tests look at). */
export interface PvcView {
  metadata: { name: string; namespace: string; uid: string; annotations?: Record<string, string>; ownerReferences?: { uid: string }[]; finalizers?: string[]; deletionTimestamp?: string };
  spec: { storageClassName?: string; volumeMode?: string; resources?: { requests?: { storage?: string } } };
}

/** Lists the PersistentVolumeClaims of a namespace. */
export async function listPvcs(http: KubeHttp, namespace: string): Promise<PvcView[]> {
  return (await http.send<{ items: PvcView[] }>({ method: 'GET', path: `/api/v1/namespaces/${namespace}/persistentvolumeclaims` })).items;
}

/** Creates many VirtualDisks concurrently (faster than kubectl for a thousand). */
export async function createDisks(http: KubeHttp, namespace: string, disks: { name: string; spec: Record<string, unknown> }[], concurrency = 16): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    for (let i = next++; i < disks.length; i = next++) {
      const d = disks[i]!;
      await http.send({ method: 'POST', path: `/apis/vhba.io/v1alpha1/namespaces/${namespace}/virtualdisks`, body: { apiVersion: 'vhba.io/v1alpha1', kind: 'VirtualDisk', metadata: { name: d.name, namespace }, spec: d.spec } });
    }
  }));
}

/** Creates a namespace (ignores AlreadyExists). */
export async function createNamespace(http: KubeHttp, name: string): Promise<void> {
  await http.send({ method: 'POST', path: '/api/v1/namespaces', body: { apiVersion: 'v1', kind: 'Namespace', metadata: { name } } }).catch((e: { kind?: string }) => {
    if (e.kind !== 'AlreadyExists') throw e;
  });
}

/** What the planner predicts for stored disks (UID-seeded identity, VM = namespace/vmName), from scratch. */
export function predict(disks: readonly DiskObject[]): Map<string, { scsiAddress: string; serial: string; wwn: string; guestDevicePaths: string[] }> {
  const intents = disks.map((d) => {
    const checked = validateVirtualDisk({ apiVersion: d.apiVersion, kind: d.kind, metadata: { name: d.metadata.name, namespace: d.metadata.namespace, uid: d.metadata.uid }, spec: d.spec });
    if (!checked.ok) throw new Error(`${objectKey(d.metadata)} is invalid: ${JSON.stringify(checked.errors)}`);
    return intentFromDisk(checked.disk, 'operator');
  });
  const plan = planAssignments(intents, new Map());
  const out = new Map<string, { scsiAddress: string; serial: string; wwn: string; guestDevicePaths: string[] }>();
  for (const [key, r] of plan.results) {
    if (!r.ok || r.address === undefined) continue;
    out.set(key, { scsiAddress: formatAddress(r.address), serial: r.serial, wwn: formatWwn(r.wwn), guestDevicePaths: predictGuestPaths(r) });
  }
  return out;
}

/** Plays kube-controller-manager's pvc-protection controller: a terminating
 * claim loses its kubernetes.io/pvc-protection finalizer (no pod uses it here). */
export function startPvcProtectionController(http: KubeHttp, namespaces: () => string[], everyMs = 300): { stop(): void } {
  let stopped = false;
  const loop = async () => {
    while (!stopped) {
      for (const ns of namespaces()) {
        try {
          for (const pvc of await listPvcs(http, ns)) {
            if (pvc.metadata.deletionTimestamp === undefined || !(pvc.metadata.finalizers ?? []).includes('kubernetes.io/pvc-protection')) continue;
            await http.send({
              method: 'PATCH', path: `/api/v1/namespaces/${ns}/persistentvolumeclaims/${pvc.metadata.name}`, contentType: PATCH_TYPES.merge,
              body: { metadata: { finalizers: (pvc.metadata.finalizers ?? []).filter((f) => f !== 'kubernetes.io/pvc-protection') } },
            }).catch(() => undefined);
          }
        } catch {
          // next round
        }
      }
      await new Promise((r) => setTimeout(r, everyMs));
    }
  };
  void loop();
  return { stop: () => { stopped = true; } };
}

/** Options for starting the operator process. */
export interface OperatorProcessOptions {
  kubeconfigPath: string;
  namespace?: string;
  env?: Record<string, string>;
  args?: string[];
  /** Log text that means "started" (default: reconciling or leading). */
  until?: RegExp;
}

/** `bin/vhba operator` as a child process, its logs, its memory. */
export class OperatorProcess {
  readonly child: ChildProcess;
  readonly exited: Promise<number | null>;
  logs = '';
  port = 0;
  peakRssKb = 0;
  private sampler: NodeJS.Timeout;

  private constructor(child: ChildProcess) {
    this.child = child;
    this.exited = new Promise((r) => child.once('exit', (code, signal) => r(code ?? (signal === null ? null : 128))));
    child.stderr?.on('data', (chunk: Buffer) => {
      this.logs += chunk.toString();
      if (this.logs.length > 4_000_000) this.logs = this.logs.slice(-2_000_000);
    });
    this.sampler = setInterval(() => { this.peakRssKb = Math.max(this.peakRssKb, this.rssKb()); }, 200);
    this.sampler.unref();
    void this.exited.then(() => clearInterval(this.sampler));
  }

  /** Starts the operator; resolves once it reconciles (or has exited, e.g. a crash point). */
  static async start(options: OperatorProcessOptions): Promise<OperatorProcess> {
    const args = ['operator', '--kubeconfig', options.kubeconfigPath, '--metrics-addr', '127.0.0.1:0', '--log-level', 'info', ...(options.namespace === undefined ? [] : ['--namespace', options.namespace]), ...(options.args ?? [])];
    const child = spawn(join(REPO, 'bin', 'vhba'), args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...(options.env ?? {}) } });
    const op = new OperatorProcess(child);
    await waitFor('the operator to start', async () => {
      const m = /"metrics":(\d+)/.exec(op.logs);
      if (m !== null) op.port = Number(m[1]);
      if ((options.until ?? /caches synced|lease acquired/).test(op.logs) || op.child.exitCode !== null || op.child.signalCode !== null) return true;
      return undefined;
    }, 60_000, 50).catch(async (e: Error) => {
      await op.kill(); // never leave a half-started operator behind
      throw new Error(`${e.message}\n--- operator log ---\n${op.logs.slice(-4000)}`);
    });
    return op;
  }

  /** Resident memory now (kB), from /proc. */
  rssKb(): number {
    try {
      const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${this.child.pid}/status`, 'utf8'));
      return m === null ? 0 : Number(m[1]);
    } catch {
      return 0;
    }
  }

  /** GET a probe path on the metrics port. */
  async get(path: string): Promise<{ status: number; text: string }> {
    const res = await fetch(`http://127.0.0.1:${this.port}${path}`);
    return { status: res.status, text: await res.text() };
  }

  /** SIGTERM, then wait for the exit code. */
  async stop(): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    return this.exited;
  }

  /** SIGKILL (a crash), then wait. */
  async kill(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    await this.exited;
  }
}
