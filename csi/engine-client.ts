// The CSI plugin's view of the HBA engine: a client of the engine's control
// API (protos/vhba/hba/v1/hba.proto) and the few queries built on it.
import { createClient, type ServiceClient } from '../protos/grpc.ts';
import { EngineService, type ControllerStatus, type LunStatus } from '../protos/gen/vhba/hba/v1/hba_pb.ts';
import type { PassthroughVolume } from './volumes.ts';

type EngineMethods = (typeof EngineService)['method'];

/** A promise-based EngineService client. */
export type EngineClient = ServiceClient<EngineMethods>;

/** Connects to the engine's control socket (unix:///path). */
export function connectEngine(address: string): EngineClient {
  return createClient(EngineService, address);
}

/** Where a backing file is attached: controller and LUN status. */
export interface AttachedLun {
  controller: ControllerStatus;
  lun: LunStatus;
}

/** Every LUN whose backing file is `path`. */
export async function findLunsByBacking(engine: EngineClient, path: string): Promise<AttachedLun[]> {
  const { controllers } = await engine.listControllers({});
  const out: AttachedLun[] = [];
  for (const controller of controllers) {
    for (const lun of controller.luns) if (lun.backingPath === path) out.push({ controller, lun });
  }
  return out;
}

/** Every LUN attached with the device of a passthrough volume (same host
 * device path, or same portal, target name and LUN). */
export async function findLunsByDevice(engine: EngineClient, p: PassthroughVolume): Promise<AttachedLun[]> {
  const { controllers } = await engine.listControllers({});
  const out: AttachedLun[] = [];
  const src = p.source;
  for (const controller of controllers) {
    for (const lun of controller.luns) {
      const same = src.kind === 'hostDevice'
        ? lun.hostDevice?.path === src.path
        : lun.iscsi !== undefined && lun.iscsi.portal === src.portal && lun.iscsi.iqn === src.iqn && lun.iscsi.lun === src.lun;
      if (same) out.push({ controller, lun });
    }
  }
  return out;
}
