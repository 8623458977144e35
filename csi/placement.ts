// Where the node plugin attaches a volume: which VM, which of its virtio-scsi
// controllers, which target and LUN. In a cluster the placement the operator
// planned reaches the volume context (vhba.io/vm as "namespace/vmName",
// vhba.io/controller, vhba.io/target, vhba.io/lun) through its claim, read
// and checked by CreateVolume (claim-parameters.ts); otherwise StorageClass
// parameters may give it. kubelet adds the pod's name and namespace
// (podInfoOnMount).
//
// Defaults, for callers that give no placement (csi-sanity, a plain PVC):
//  - VM: vhba.io/vm if given ("ns/name", or "name" in the pod's namespace);
//    else the pod (csi.storage.k8s.io/pod.namespace + pod.name: the
//    virt-launcher pod runs the VM); else the per-node default VM
//    "vhba/node-default";
//  - controller 0; LUN 0;
//  - target: the lowest target of that controller carrying no LUN.
// The controller's vhost-user socket is <socket-dir>/<namespace>/<vm>/hba<N>.sock
// and its id "<namespace>/<vm>/hba<N>".
import { join } from 'node:path';
import { MAX_TARGETS } from '../hba/engine-api.ts';
import type { ListControllersResponse } from '../protos/gen/vhba/hba/v1/hba_pb.ts';
import { failedPrecondition, resourceExhausted } from './errors.ts';
import { ContextKey, PodInfoKey, parsePlacementNumber, parseVmName } from './volumes.ts';

/** The VM used when neither the volume context nor kubelet names one. */
export const DEFAULT_VM = { namespace: 'vhba', name: 'node-default' } as const;

/** Longest unix socket path (sun_path is 108 bytes with the NUL). */
export const MAX_SOCKET_PATH = 107;

/** A VM controller and the address wanted on it (target undefined: pick). */
export interface Placement {
  namespace: string;
  vm: string;
  controllerIndex: number;
  controllerId: string;
  /** The VM's socket directory: what NodePublish publishes. */
  vmDir: string;
  socketPath: string;
  target?: number;
  lun: number;
}

const LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** Reads placement from a NodePublish volume context. Every value is
 * validated before it becomes part of a path. */
export function resolvePlacement(context: Record<string, string>, socketDir: string): Placement {
  let namespace: string = DEFAULT_VM.namespace;
  let vm: string = DEFAULT_VM.name;
  const podNamespace = context[PodInfoKey.namespace];
  const podName = context[PodInfoKey.name];
  const named = context[ContextKey.vm];
  if (named !== undefined) {
    const parsed = parseVmName(named, ContextKey.vm);
    vm = parsed.name;
    namespace = parsed.namespace ?? (podNamespace && LABEL.test(podNamespace) ? podNamespace : 'default');
  } else if (podName && podNamespace && LABEL.test(podName) && LABEL.test(podNamespace)) {
    vm = podName;
    namespace = podNamespace;
  }
  const c = context[ContextKey.controller];
  const controllerIndex = c === undefined ? 0 : parsePlacementNumber(c, ContextKey.controller, 255);
  const t = context[ContextKey.target];
  const l = context[ContextKey.lun];
  const vmDir = join(socketDir, namespace, vm);
  const socketPath = join(vmDir, `hba${controllerIndex}.sock`);
  if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH) {
    throw failedPrecondition(`socket path ${socketPath} is longer than ${MAX_SOCKET_PATH} bytes; start the node plugin with a shorter --socket-dir`);
  }
  return {
    namespace, vm, controllerIndex, controllerId: `${namespace}/${vm}/hba${controllerIndex}`, vmDir, socketPath,
    ...(t === undefined ? {} : { target: parsePlacementNumber(t, ContextKey.target, MAX_TARGETS - 1) }),
    lun: l === undefined ? 0 : parsePlacementNumber(l, ContextKey.lun, 16383),
  };
}

/** The lowest target of `controllerId` with no LUN attached. */
export function lowestFreeTarget(list: ListControllersResponse, controllerId: string): number {
  const used = new Set<number>();
  for (const c of list.controllers) if (c.id === controllerId) for (const l of c.luns) used.add(l.address?.target ?? 0);
  for (let t = 0; t < MAX_TARGETS; t++) if (!used.has(t)) return t;
  throw resourceExhausted(`controller ${controllerId} has a LUN on each of its ${MAX_TARGETS} targets; pin vhba.io/target and vhba.io/lun to share one`);
}
