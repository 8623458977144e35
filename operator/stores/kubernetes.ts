// The Store over the Kubernetes API. Reads: two informers (client-node
// ListWatch) — VirtualDisks, and the PersistentVolumeClaims the operator
// created (label app.kubernetes.io/managed-by=vhba-operator) — in one
// namespace or all. Writes: merge patches that carry metadata.resourceVersion
// (the API server answers 409 Conflict if the object changed since it was
// read: optimistic concurrency), creates, and deletes with a UID precondition.
//
// Read-your-writes: the object a write returns is kept in an overlay until
// the informer delivers that version or a newer one, so a reconcile that runs
// before the watch event arrives still sees the assignment just written (and
// can never hand the same address to another disk). Versions are compared as
// etcd revisions (integers), which is what every kube-apiserver serves;
// a non-numeric resourceVersion makes the informer's copy win.
import { makeInformer, type Informer, type KubeConfig, type KubernetesListObject, type KubernetesObject, type ObjectCache } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { parseByteQuantity } from '../api/quantity.ts';
import { API_VERSION, KIND, type VirtualDiskStatus } from '../api/virtualdisk.ts';
import { ANNOTATIONS, MANAGED_BY_LABEL, objectKey, vmKeyOf, type ClaimObject, type ClaimSpec, type DiskObject } from '../objects.ts';
import type { EventSpec } from '../plan.ts';
import type { ChangeListener, Store } from '../store.ts';
import { KubeHttp, PATCH_TYPES } from './kube-http.ts';

/** Options of the Kubernetes store. */
export interface KubernetesStoreOptions {
  kubeConfig: KubeConfig;
  /** Namespace to watch; undefined: all namespaces. */
  namespace?: string;
  log: Logger;
  /** Identity written into Events (reportingInstance), e.g. the pod name. */
  identity: string;
}

interface RawObject extends KubernetesObject {
  metadata?: KubernetesObject['metadata'] & { deletionTimestamp?: Date | string };
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
}

const DISK_GROUP_PATH = `/apis/${API_VERSION}`;

function rvNumber(rv: string | undefined): bigint | undefined {
  return rv !== undefined && /^[0-9]{1,30}$/.test(rv) ? BigInt(rv) : undefined;
}

/** Normalises what the informer or the API returned into a DiskObject. */
export function toDiskObject(raw: RawObject): DiskObject {
  const m = raw.metadata ?? {};
  const ts = m.deletionTimestamp;
  return {
    apiVersion: API_VERSION,
    kind: KIND,
    metadata: {
      name: m.name ?? '', namespace: m.namespace ?? '', uid: m.uid ?? '', resourceVersion: m.resourceVersion ?? '',
      ...(m.generation === undefined ? {} : { generation: m.generation }),
      ...(m.finalizers === undefined ? {} : { finalizers: [...m.finalizers] }),
      ...(ts === undefined || ts === null ? {} : { deletionTimestamp: ts instanceof Date ? ts.toISOString() : String(ts) }),
      ...(m.labels === undefined ? {} : { labels: { ...m.labels } }),
      ...(m.annotations === undefined ? {} : { annotations: { ...m.annotations } }),
    },
    spec: (raw.spec ?? {}) as unknown as DiskObject['spec'],
    ...(raw.status === undefined ? {} : { status: raw.status as DiskObject['status'] }),
  };
}

/** Normalises a PersistentVolumeClaim into a ClaimObject. */
export function toClaimObject(raw: RawObject): ClaimObject {
  const m = raw.metadata ?? {};
  const spec = (raw.spec ?? {}) as { storageClassName?: string; volumeName?: string; resources?: { requests?: { storage?: string } } };
  const parsed = parseByteQuantity(spec.resources?.requests?.storage ?? '0');
  const ts = m.deletionTimestamp;
  return {
    metadata: {
      name: m.name ?? '', namespace: m.namespace ?? '', uid: m.uid ?? '', resourceVersion: m.resourceVersion ?? '',
      ...(m.annotations === undefined ? {} : { annotations: { ...m.annotations } }),
      ...(m.labels === undefined ? {} : { labels: { ...m.labels } }),
      ...(m.ownerReferences === undefined ? {} : { ownerReferences: m.ownerReferences.map((o) => ({ ...o })) }),
      ...(ts === undefined || ts === null ? {} : { deletionTimestamp: ts instanceof Date ? ts.toISOString() : String(ts) }),
    },
    requestBytes: parsed.ok ? parsed.bytes : 0,
    ...(spec.storageClassName === undefined ? {} : { storageClassName: spec.storageClassName }),
    ...(spec.volumeName === undefined || spec.volumeName === '' ? {} : { volumeName: spec.volumeName }),
  };
}

/** See the file comment. */
export class KubernetesStore implements Store {
  readonly http: KubeHttp;
  private readonly options: KubernetesStoreOptions;
  private readonly disks: Informer<RawObject> & ObjectCache<RawObject>;
  private readonly claims: Informer<RawObject> & ObjectCache<RawObject>;
  private readonly overlay = new Map<string, DiskObject>();
  private readonly deletedUids = new Set<string>();
  /** Claims this process created that the informer has not delivered yet. */
  private readonly createdClaims = new Map<string, ClaimObject>();
  private readonly listeners: ChangeListener[] = [];
  private stopped = false;
  private eventSeq = 0;
  private readonly diskCollection: string;
  private readonly claimCollection: string;
  synced = false;

  constructor(options: KubernetesStoreOptions) {
    this.options = options;
    this.http = new KubeHttp(options.kubeConfig);
    const ns = options.namespace;
    const diskPath = ns === undefined ? `${DISK_GROUP_PATH}/virtualdisks` : `${DISK_GROUP_PATH}/namespaces/${ns}/virtualdisks`;
    const claimPath = ns === undefined ? '/api/v1/persistentvolumeclaims' : `/api/v1/namespaces/${ns}/persistentvolumeclaims`;
    const selector = `${MANAGED_BY_LABEL.key}=${MANAGED_BY_LABEL.value}`;
    this.diskCollection = diskPath;
    this.claimCollection = claimPath;
    this.disks = makeInformer(options.kubeConfig, diskPath, () => this.listAll(diskPath));
    this.claims = makeInformer(options.kubeConfig, claimPath, () => this.listAll(claimPath, selector), selector);
    const diskChanged = (raw: RawObject) => this.emit(vmKeyOf(toDiskObject(raw)));
    this.disks.on('add', diskChanged);
    this.disks.on('update', diskChanged);
    this.disks.on('delete', (raw) => {
      const disk = toDiskObject(raw);
      this.deletedUids.add(disk.metadata.uid);
      this.overlay.delete(objectKey(disk.metadata));
      this.emit(vmKeyOf(disk));
    });
    const claimChanged = (raw: RawObject) => {
      const vm = raw.metadata?.annotations?.[ANNOTATIONS.vm];
      if (vm !== undefined && raw.metadata?.namespace !== undefined) this.emit(`${raw.metadata.namespace}/${vm}`);
    };
    for (const verb of ['add', 'update', 'delete'] as const) this.claims.on(verb, claimChanged);
    this.claims.on('delete', (raw) => this.createdClaims.delete(objectKey({ namespace: raw.metadata?.namespace ?? '', name: raw.metadata?.name ?? '' })));
    for (const [what, informer] of [['virtualdisks', this.disks], ['persistentvolumeclaims', this.claims]] as const) {
      informer.on('error', (err: unknown) => {
        if (this.stopped) return;
        options.log.warn({ informer: what, err: (err as Error)?.message ?? String(err) }, 'watch failed; restarting in 2 s');
        setTimeout(() => { if (!this.stopped) informer.start().catch(() => undefined); }, 2_000).unref();
      });
    }
  }

  /** Lists a collection in pages of 500 (the informer's list function). */
  private async listAll(path: string, labelSelector?: string): Promise<KubernetesListObject<RawObject>> {
    const items: RawObject[] = [];
    let cont: string | undefined;
    let resourceVersion = '';
    do {
      const page = await this.http.send<{ metadata?: { resourceVersion?: string; continue?: string }; items?: RawObject[] }>({
        method: 'GET', path, query: { limit: '500', continue: cont, labelSelector },
      });
      items.push(...(page.items ?? []));
      resourceVersion = page.metadata?.resourceVersion ?? resourceVersion;
      cont = page.metadata?.continue || undefined;
    } while (cont !== undefined);
    return { apiVersion: 'v1', kind: 'List', metadata: { resourceVersion }, items };
  }

  private emit(vm: string): void {
    for (const listener of this.listeners) listener(vm);
  }

  async start(): Promise<void> {
    // Fail early and clearly (a missing CRD, missing RBAC): client-node's
    // informer only reports a failed first list to its error callbacks.
    await this.http.send({ method: 'GET', path: this.diskCollection, query: { limit: '1' } });
    await this.http.send({ method: 'GET', path: this.claimCollection, query: { limit: '1' } });
    await this.disks.start();
    await this.claims.start();
    this.synced = true;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.disks.stop();
    await this.claims.stop();
    this.http.close();
  }

  onChange(listener: ChangeListener): void {
    this.listeners.push(listener);
  }

  /** Records a write's result unless the informer already has that version or a newer one. */
  private remember(disk: DiskObject): DiskObject {
    if (!this.deletedUids.has(disk.metadata.uid)) this.overlay.set(objectKey(disk.metadata), disk);
    return disk;
  }

  /** The freshest copy of a disk: the informer's, or a newer one a write returned. */
  private freshest(raw: RawObject): DiskObject {
    const cached = toDiskObject(raw);
    const key = objectKey(cached.metadata);
    const written = this.overlay.get(key);
    if (written === undefined) return cached;
    const a = rvNumber(cached.metadata.resourceVersion);
    const b = rvNumber(written.metadata.resourceVersion);
    if (written.metadata.uid !== cached.metadata.uid || a === undefined || b === undefined || a >= b) {
      this.overlay.delete(key);
      return cached;
    }
    return structuredClone(written);
  }

  allDisks(): DiskObject[] {
    return this.disks.list(this.options.namespace).map((raw) => this.freshest(raw));
  }

  vms(): string[] {
    return [...new Set(this.allDisks().map(vmKeyOf))].sort();
  }

  disksOfVm(vm: string): DiskObject[] {
    const [namespace] = vm.split('/');
    return this.disks.list(namespace).map((raw) => this.freshest(raw)).filter((d) => vmKeyOf(d) === vm);
  }

  claim(namespace: string, name: string): ClaimObject | undefined {
    const raw = this.claims.get(name, namespace);
    const key = objectKey({ namespace, name });
    if (raw !== undefined) {
      this.createdClaims.delete(key);
      return toClaimObject(raw);
    }
    return this.createdClaims.get(key);
  }

  private diskPath(namespace: string, name: string, sub = ''): string {
    return `${DISK_GROUP_PATH}/namespaces/${encodeURIComponent(namespace)}/virtualdisks/${encodeURIComponent(name)}${sub}`;
  }

  async refreshDisk(namespace: string, name: string): Promise<DiskObject | undefined> {
    try {
      return this.remember(toDiskObject(await this.http.send<RawObject>({ method: 'GET', path: this.diskPath(namespace, name) })));
    } catch (error) {
      if ((error as { kind?: string }).kind === 'NotFound') return undefined;
      throw error;
    }
  }

  async attachmentsOfClaim(namespace: string, name: string): Promise<string[]> {
    const list = await this.http.send<{ items?: { metadata?: { name?: string }; spec?: { source?: { persistentVolumeName?: string } } }[] }>({
      method: 'GET', path: '/apis/storage.k8s.io/v1/volumeattachments',
    });
    const found: string[] = [];
    const pvClaim = new Map<string, string | undefined>();
    for (const va of list.items ?? []) {
      const pv = va.spec?.source?.persistentVolumeName;
      if (pv === undefined) continue;
      if (!pvClaim.has(pv)) {
        try {
          const vol = await this.http.send<{ spec?: { claimRef?: { namespace?: string; name?: string } } }>({ method: 'GET', path: `/api/v1/persistentvolumes/${encodeURIComponent(pv)}` });
          const ref = vol.spec?.claimRef;
          pvClaim.set(pv, ref === undefined ? undefined : `${ref.namespace}/${ref.name}`);
        } catch (error) {
          if ((error as { kind?: string }).kind !== 'NotFound') throw error;
          pvClaim.set(pv, undefined);
        }
      }
      if (pvClaim.get(pv) === `${namespace}/${name}`) found.push(va.metadata?.name ?? '?');
    }
    return found;
  }

  async setFinalizers(disk: DiskObject, finalizers: string[]): Promise<DiskObject> {
    const raw = await this.http.send<RawObject>({
      method: 'PATCH', path: this.diskPath(disk.metadata.namespace, disk.metadata.name), contentType: PATCH_TYPES.merge,
      body: { metadata: { resourceVersion: disk.metadata.resourceVersion, finalizers } },
    });
    return this.remember(toDiskObject(raw));
  }

  async patchStatus(disk: DiskObject, status: VirtualDiskStatus, remove: readonly string[]): Promise<DiskObject> {
    const patch: Record<string, unknown> = { ...status };
    for (const key of remove) patch[key] = null;
    const raw = await this.http.send<RawObject>({
      method: 'PATCH', path: this.diskPath(disk.metadata.namespace, disk.metadata.name, '/status'), contentType: PATCH_TYPES.merge,
      body: { metadata: { resourceVersion: disk.metadata.resourceVersion }, status: patch },
    });
    return this.remember(toDiskObject(raw));
  }

  async createClaim(claim: ClaimSpec): Promise<ClaimObject> {
    const raw = await this.http.send<RawObject>({
      method: 'POST', path: `/api/v1/namespaces/${encodeURIComponent(claim.namespace)}/persistentvolumeclaims`,
      body: {
        apiVersion: 'v1', kind: 'PersistentVolumeClaim',
        metadata: { name: claim.name, namespace: claim.namespace, labels: claim.labels, annotations: claim.annotations, ownerReferences: [claim.owner] },
        spec: {
          accessModes: ['ReadWriteOnce'], volumeMode: 'Block', storageClassName: claim.storageClassName,
          resources: { requests: { storage: String(claim.requestBytes) } },
        },
      },
    });
    const created = toClaimObject(raw);
    this.createdClaims.set(objectKey(claim), created);
    return created;
  }

  async updateClaim(namespace: string, name: string, annotations: Record<string, string>, requestBytes?: number): Promise<ClaimObject> {
    const body: Record<string, unknown> = { metadata: { annotations } };
    if (requestBytes !== undefined) body.spec = { resources: { requests: { storage: String(requestBytes) } } };
    const raw = await this.http.send<RawObject>({
      method: 'PATCH', path: `/api/v1/namespaces/${encodeURIComponent(namespace)}/persistentvolumeclaims/${encodeURIComponent(name)}`,
      contentType: PATCH_TYPES.merge, body,
    });
    return toClaimObject(raw);
  }

  async deleteClaim(namespace: string, name: string, uid: string): Promise<void> {
    await this.http.send({
      method: 'DELETE', path: `/api/v1/namespaces/${encodeURIComponent(namespace)}/persistentvolumeclaims/${encodeURIComponent(name)}`,
      body: { apiVersion: 'v1', kind: 'DeleteOptions', preconditions: { uid }, propagationPolicy: 'Background' },
    });
  }

  /** A core/v1 Event (kubectl describe shows it), named like client-go's recorder: object name + "." + hex time. */
  async recordEvent(disk: DiskObject, event: EventSpec): Promise<void> {
    const now = new Date();
    const suffix = `${(BigInt(now.getTime()) * 1_000_000n + BigInt(this.eventSeq++ % 1_000_000)).toString(16)}`;
    const ns = disk.metadata.namespace;
    await this.http.send({
      method: 'POST', path: `/api/v1/namespaces/${encodeURIComponent(ns)}/events`,
      body: {
        apiVersion: 'v1', kind: 'Event',
        metadata: { name: `${disk.metadata.name.slice(0, 200)}.${suffix}`, namespace: ns },
        involvedObject: { apiVersion: API_VERSION, kind: KIND, name: disk.metadata.name, namespace: ns, uid: disk.metadata.uid, resourceVersion: disk.metadata.resourceVersion },
        type: event.type, reason: event.reason, message: event.message.slice(0, 1024),
        source: { component: 'vhba-operator' }, reportingComponent: 'vhba.io/operator', reportingInstance: this.options.identity,
        firstTimestamp: now.toISOString(), lastTimestamp: now.toISOString(), count: 1,
      },
    });
  }
}
