// Assembles the CSI plugin: stores under --state-dir, the engine client, the
// Identity / Controller / Node services for the chosen mode, the call
// wrapper, and a grpc-js server on a unix socket.
//
// State layout (each a DirectoryStore, or with `kubernetes` set a
// KubernetesStore of ConfigMaps, csi/stores/kubernetes.ts, kind in brackets):
//   <state-dir>/controller/volumes [volume], <state-dir>/controller/snapshots [snapshot]
//   <state-dir>/node/volumes: always a directory (this host's mounts)
//   <state-dir>/nodes [node]: one record per node plugin that started with
//   this state (directory or namespace); the controller publishes only to
//   these nodes and, in a cluster, to those the CSINode objects list for
//   our driver (kubelet registers the node plugins there).
import * as grpc from '@grpc/grpc-js';
import { chmod, mkdir, rm } from 'node:fs/promises';
import { checkSocketDir } from '../hba/security.ts'; // H9
import { dirname, join } from 'node:path';
import type { Logger } from 'pino';
import { addService } from '../protos/grpc.ts';
import { Controller, Identity, Node } from '../protos/gen/csi/v1/csi_pb.ts';
import { createController } from './controller.ts';
import { connectEngine, type EngineClient } from './engine-client.ts';
import { createIdentity } from './identity.ts';
import { KeyedLocks } from './locks.ts';
import { createNode, type NodeVolumeRecord } from './node.ts';
import { DirectoryStore, type RecordStore } from './store.ts';
import { KubernetesStore, type RecordKind } from './stores/kubernetes.ts';
import { kubernetesClaimReader } from './stores/claims.ts';
import { StorageV1Api, type KubeConfig } from '@kubernetes/client-node';
import { DRIVER_NAME, type SnapshotRecord, type VolumeRecord } from './volumes.ts';
import { createCallWrapper } from './wrapper.ts';

/** The three ways the plugin runs. */
export const CsiMode = { controller: 'controller', node: 'node', all: 'all' } as const;
export type CsiMode = (typeof CsiMode)[keyof typeof CsiMode];

export interface CsiServerOptions {
  mode: CsiMode;
  /** unix:///absolute/path.sock */
  endpoint: string;
  nodeId: string;
  stateDir: string;
  dataDir: string;
  /** Engine control socket (unix:///…); required for node and all. */
  engineEndpoint?: string;
  publishRoot: string;
  socketDir: string;
  maxVolumesPerNode: number;
  /** Keep controller state and the node registry as ConfigMaps in this
   * namespace instead of under stateDir. */
  kubernetes?: { kubeConfig: KubeConfig; namespace: string };
  log: Logger;
}

export interface CsiServer {
  readonly endpoint: string;
  close(): Promise<void>;
}

interface NodeRegistration { id: string; registeredAtMs: number }

/** In a cluster, kubelet records every node plugin it registered in the
 * node's CSINode object (storage.k8s.io/v1): the node ids of our driver there
 * are the nodes the controller may publish to. */
async function csiNodeIds(kubeConfig: KubeConfig): Promise<string[]> {
  const api = kubeConfig.makeApiClient(StorageV1Api);
  const list = await api.listCSINode();
  return list.items.flatMap((n) => (n.spec?.drivers ?? []).filter((d) => d.name === DRIVER_NAME && d.nodeID).map((d) => d.nodeID));
}

/** Starts the plugin; resolves once the socket accepts calls. */
export async function startCsiServer(o: CsiServerOptions): Promise<CsiServer> {
  const socketPath = o.endpoint.replace(/^unix:\/\//, '');
  const serveController = o.mode !== 'node';
  const serveNode = o.mode !== 'controller';
  await mkdir(o.stateDir, { recursive: true, mode: 0o700 });
  await mkdir(o.dataDir, { recursive: true, mode: 0o700 });
  const engine: EngineClient | undefined = o.engineEndpoint ? connectEngine(o.engineEndpoint) : undefined;
  const nodesDir = join(o.stateDir, 'nodes');
  const kube = o.kubernetes;
  /** The store of one kind: ConfigMaps with `kubernetes`, else the directory. */
  const openStore = <T extends { id: string }>(kind: RecordKind, dir: string): Promise<RecordStore<T>> =>
    kube ? Promise.resolve(new KubernetesStore<T>({ kubeConfig: kube.kubeConfig, namespace: kube.namespace, kind })) : DirectoryStore.open<T>(dir);

  const server = new grpc.Server();
  const wrap = createCallWrapper({ log: o.log, locks: new KeyedLocks(), services: [Identity, Controller, Node] });
  const manifest = { mode: o.mode, node: o.nodeId };
  addService(server, Identity, createIdentity({ controller: serveController, ...(engine ? { engine } : {}), manifest }), wrap);

  if (serveNode) {
    if (!engine) throw new Error('--engine-endpoint is required in node and all modes');
    await mkdir(o.socketDir, { recursive: true, mode: 0o750 });
    const registry = await openStore<NodeRegistration>('node', nodesDir);
    await registry.put({ id: o.nodeId, registeredAtMs: Date.now() });
    addService(server, Node, createNode({
      nodeId: o.nodeId, maxVolumesPerNode: o.maxVolumesPerNode, publishRoot: o.publishRoot, dataDir: o.dataDir,
      socketDir: o.socketDir, engine, records: await DirectoryStore.open<NodeVolumeRecord>(join(o.stateDir, 'node', 'volumes')),
    }), wrap);
  }
  if (serveController) {
    addService(server, Controller, createController({
      nodeId: o.nodeId, dataDir: o.dataDir, maxVolumesPerNode: o.maxVolumesPerNode, ...(engine ? { engine } : {}),
      // In a cluster, a VirtualDisk's claim gives its volume's VM, address,
      // identity and block sizes, or a lun disk's device (claim-parameters.ts).
      ...(kube ? { claims: kubernetesClaimReader(kube.kubeConfig) } : {}),
      volumes: await openStore<VolumeRecord>('volume', join(o.stateDir, 'controller', 'volumes')),
      snapshots: await openStore<SnapshotRecord>('snapshot', join(o.stateDir, 'controller', 'snapshots')),
      async knownNodes() {
        const nodes = new Set((await (await openStore<NodeRegistration>('node', nodesDir)).list()).map((n) => n.id));
        if (serveNode) nodes.add(o.nodeId);
        if (kube) for (const id of await csiNodeIds(kube.kubeConfig)) nodes.add(id);
        return nodes;
      },
    }), wrap);
  }

  await mkdir(dirname(socketPath), { recursive: true, mode: 0o750 });
  checkSocketDir(dirname(socketPath)); // H9: a directory only we (or root) can write; the socket is 0600 below
  await rm(socketPath, { force: true });
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`unix://${socketPath}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())),
  );
  await chmod(socketPath, 0o600);
  o.log.info({ mode: o.mode, endpoint: o.endpoint, nodeId: o.nodeId, engine: o.engineEndpoint, stateNamespace: kube?.namespace }, 'csi plugin listening');
  return {
    endpoint: `unix://${socketPath}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.tryShutdown(() => {
          engine?.close();
          rm(socketPath, { force: true }).finally(resolve);
        });
      }),
  };
}
