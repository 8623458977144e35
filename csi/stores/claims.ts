// The ClaimReader (csi/claim-parameters.ts) over the Kubernetes API: a
// PersistentVolumeClaim's annotations and owners, a VirtualDisk's UID, spec
// and status. Not found → undefined; other API errors are thrown (CreateVolume
// fails and external-provisioner retries).
import { ApiException, CoreV1Api, CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import { API_VERSION } from '../../operator/api/virtualdisk.ts';
import type { ClaimReader } from '../claim-parameters.ts';

/** 404 → undefined; anything else is rethrown. */
function notFoundIsUndefined(err: unknown): undefined {
  if (err instanceof ApiException && (err as ApiException<unknown>).code === 404) return undefined;
  throw err;
}

/** A ClaimReader over the Kubernetes API. */
export function kubernetesClaimReader(kubeConfig: KubeConfig): ClaimReader {
  const core = kubeConfig.makeApiClient(CoreV1Api);
  const custom = kubeConfig.makeApiClient(CustomObjectsApi);
  const [group, version] = API_VERSION.split('/') as [string, string];
  return {
    async claim(namespace, name) {
      const pvc = await core.readNamespacedPersistentVolumeClaim({ name, namespace }).catch(notFoundIsUndefined);
      if (pvc === undefined) return undefined;
      return {
        annotations: pvc.metadata?.annotations ?? {},
        ownerReferences: (pvc.metadata?.ownerReferences ?? []).map((o) => ({ apiVersion: o.apiVersion, kind: o.kind, name: o.name, uid: o.uid, ...(o.controller === undefined ? {} : { controller: o.controller }) })),
      };
    },
    async virtualDisk(namespace, name) {
      const obj = (await custom.getNamespacedCustomObject({ group, version, namespace, plural: 'virtualdisks', name }).catch(notFoundIsUndefined)) as { metadata?: { uid?: string }; spec?: unknown; status?: unknown } | undefined;
      if (obj?.metadata?.uid === undefined) return undefined;
      return { uid: obj.metadata.uid, spec: obj.spec, status: obj.status };
    },
  };
}
