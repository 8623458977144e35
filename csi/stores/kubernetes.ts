// A RecordStore backed by the Kubernetes API (issue 5: "the Kubernetes API in
// a cluster, a directory written atomically otherwise"). One ConfigMap per
// record in one namespace: name `vhba-<kind>-<sha256(id)>` (ids arrive in
// requests and never become names), labels app.kubernetes.io/managed-by=vhba
// and vhba.io/record-kind=<kind>, the record as JSON under data["record.json"].
// Writes use optimistic concurrency (metadata.resourceVersion; the API server
// answers 409 Conflict to a stale one), so two writers never silently undo
// each other's read-modify-write. No cache: every read asks the API server,
// so several replicas see one truth. RBAC: configmaps get, list, create,
// update, delete in the namespace (deploy/helm/vhba/templates/rbac-controller.yaml).
import { createHash } from 'node:crypto';
import { ApiException, CoreV1Api, type KubeConfig, type V1ConfigMap } from '@kubernetes/client-node';
import type { RecordStore } from '../store.ts';

/** The kinds of record the CSI plugin keeps in the API (csi/server.ts). */
export const RecordKind = { volume: 'volume', snapshot: 'snapshot', node: 'node' } as const;
export type RecordKind = (typeof RecordKind)[keyof typeof RecordKind];

/** Label every ConfigMap of ours carries. */
export const MANAGED_BY_LABEL = 'app.kubernetes.io/managed-by';
/** Label naming the record kind; list() selects on it. */
export const RECORD_KIND_LABEL = 'vhba.io/record-kind';
/** The data key holding the record's JSON. */
export const RECORD_DATA_KEY = 'record.json';

/** How many times a write retries after 409 Conflict before giving up. */
const MAX_CONFLICT_RETRIES = 16;
/** Page size of list(). */
const LIST_PAGE = 250;

/** The HTTP status of an API error, or undefined for other errors. */
function statusOf(err: unknown): number | undefined {
  return err instanceof ApiException ? (err as ApiException<unknown>).code : undefined;
}

function byId(a: { id: string }, b: { id: string }): number {
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

export interface KubernetesStoreOptions {
  kubeConfig: KubeConfig;
  namespace: string;
  kind: RecordKind;
}

/** Records of one kind as ConfigMaps in one namespace. */
export class KubernetesStore<T extends { id: string }> implements RecordStore<T> {
  readonly namespace: string;
  readonly kind: RecordKind;
  readonly #api: CoreV1Api;

  constructor(o: KubernetesStoreOptions) {
    if (!/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(o.namespace)) throw new Error(`namespace ${JSON.stringify(o.namespace)} is not a valid Kubernetes namespace name`);
    this.namespace = o.namespace;
    this.kind = o.kind;
    this.#api = o.kubeConfig.makeApiClient(CoreV1Api);
  }

  /** The ConfigMap name of a record id in a kind. */
  static configMapName(kind: RecordKind, id: string): string {
    return `vhba-${kind}-${createHash('sha256').update(id).digest('hex')}`;
  }

  /** The label selector matching every record of this store. */
  get labelSelector(): string {
    return `${MANAGED_BY_LABEL}=vhba,${RECORD_KIND_LABEL}=${this.kind}`;
  }

  /** Decodes a ConfigMap; a foreign or corrupt one is an error, not a silent skip. */
  #decode(cm: V1ConfigMap): T {
    const name = cm.metadata?.name ?? '?';
    const text = cm.data?.[RECORD_DATA_KEY];
    if (text === undefined) throw new Error(`ConfigMap ${this.namespace}/${name} has no ${RECORD_DATA_KEY}; remove it`);
    let record: T;
    try {
      record = JSON.parse(text) as T;
    } catch (err) {
      throw new Error(`ConfigMap ${this.namespace}/${name} holds unreadable JSON (${(err as Error).message}); restore or remove it`, { cause: err });
    }
    if (typeof record?.id !== 'string' || KubernetesStore.configMapName(this.kind, record.id) !== name) {
      throw new Error(`ConfigMap ${this.namespace}/${name} does not hold the record its name promises; remove it`);
    }
    return record;
  }

  #body(record: T, resourceVersion?: string): V1ConfigMap {
    return {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: {
        name: KubernetesStore.configMapName(this.kind, record.id),
        namespace: this.namespace,
        labels: { [MANAGED_BY_LABEL]: 'vhba', [RECORD_KIND_LABEL]: this.kind },
        ...(resourceVersion !== undefined ? { resourceVersion } : {}),
      },
      data: { [RECORD_DATA_KEY]: JSON.stringify(record) },
    };
  }

  /** The ConfigMap of an id, or undefined when absent. */
  async #read(id: string): Promise<V1ConfigMap | undefined> {
    try {
      return await this.#api.readNamespacedConfigMap({ name: KubernetesStore.configMapName(this.kind, id), namespace: this.namespace });
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw err;
    }
  }

  async get(id: string): Promise<T | undefined> {
    const cm = await this.#read(id);
    return cm && this.#decode(cm);
  }

  /** Creates or replaces: an update carries the resourceVersion just read. */
  async put(record: T): Promise<void> {
    const copy = structuredClone(record);
    await this.update(record.id, () => copy);
  }

  /** Read-modify-write of one record: `change` sees the current record (or
   * undefined) and returns the new one (undefined: leave it as is). On 409 it
   * runs again on a fresh read, so no concurrent update is lost. Resolves with
   * the record as stored. */
  async update(id: string, change: (current: T | undefined) => T | undefined): Promise<T | undefined> {
    const name = KubernetesStore.configMapName(this.kind, id);
    for (let attempt = 0; attempt <= MAX_CONFLICT_RETRIES; attempt++) {
      const cm = await this.#read(id);
      const current = cm && this.#decode(cm);
      const next = change(current === undefined ? undefined : structuredClone(current));
      if (next === undefined) return current;
      if (next.id !== id) throw new Error(`update of ${JSON.stringify(id)} returned a record with id ${JSON.stringify(next.id)}`);
      try {
        if (cm === undefined) {
          await this.#api.createNamespacedConfigMap({ namespace: this.namespace, body: this.#body(next) });
        } else {
          const rv = cm.metadata?.resourceVersion;
          if (rv === undefined) throw new Error(`ConfigMap ${this.namespace}/${name} has no resourceVersion`);
          await this.#api.replaceNamespacedConfigMap({ name, namespace: this.namespace, body: this.#body(next, rv) });
        }
        return structuredClone(next);
      } catch (err) {
        // 409: created by another writer meanwhile (AlreadyExists) or changed
        // since our read (Conflict). 404: deleted since our read. Re-read.
        const status = statusOf(err);
        if (status !== 409 && status !== 404) throw err;
      }
    }
    throw new Error(`ConfigMap ${this.namespace}/${name}: still conflicting after ${MAX_CONFLICT_RETRIES} retries`);
  }

  /** Absent → OK. */
  async delete(id: string): Promise<void> {
    try {
      await this.#api.deleteNamespacedConfigMap({ name: KubernetesStore.configMapName(this.kind, id), namespace: this.namespace });
    } catch (err) {
      if (statusOf(err) !== 404) throw err;
    }
  }

  /** Every record of this kind, sorted by id; pages through the list. */
  async list(): Promise<T[]> {
    const records: T[] = [];
    let cont: string | undefined;
    for (let page = 0; page < 100_000; page++) {
      const res = await this.#api.listNamespacedConfigMap({
        namespace: this.namespace, labelSelector: this.labelSelector, limit: LIST_PAGE, ...(cont ? { _continue: cont } : {}),
      });
      for (const cm of res.items) records.push(this.#decode(cm));
      cont = res.metadata?._continue;
      if (!cont) return records.sort(byId);
    }
    throw new Error(`listing ConfigMaps in ${this.namespace} did not end`);
  }
}
