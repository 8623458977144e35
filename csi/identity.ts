// The CSI Identity service: plugin name and version, capabilities, and a
// Probe that reports the engine's health (CSI spec v1.12 §"Identity Service RPC").
import type { ServiceImpl } from '../protos/grpc.ts';
import {
  PluginCapability_Service_Type as ServiceType,
  PluginCapability_VolumeExpansion_Type as ExpansionType,
  type Identity,
} from '../protos/gen/csi/v1/csi_pb.ts';
import pkg from '../package.json' with { type: 'json' };
import type { EngineClient } from './engine-client.ts';
import { DRIVER_NAME } from './volumes.ts';

/** The plugin's version: the package version. */
export const PLUGIN_VERSION: string = pkg.version;

type IdentityMethods = (typeof Identity)['method'];

export interface IdentityDeps {
  /** Whether this process serves the Controller service. */
  controller: boolean;
  /** The engine (node and all modes); Probe asks it for readiness. */
  engine?: EngineClient;
  /** Extra manifest entries (mode, node id). */
  manifest?: Record<string, string>;
}

/** The Identity service. */
export function createIdentity(deps: IdentityDeps): ServiceImpl<IdentityMethods> {
  return {
    async getPluginInfo() {
      return { name: DRIVER_NAME, vendorVersion: PLUGIN_VERSION, manifest: deps.manifest ?? {} };
    },
    async getPluginCapabilities() {
      const services = [...(deps.controller ? [ServiceType.CONTROLLER_SERVICE] : []), ServiceType.VOLUME_ACCESSIBILITY_CONSTRAINTS];
      return {
        capabilities: [
          ...services.map((type) => ({ type: { case: 'service' as const, value: { type } } })),
          { type: { case: 'volumeExpansion' as const, value: { type: ExpansionType.ONLINE } } },
        ],
      };
    },
    async probe() {
      if (!deps.engine) return { ready: true };
      try {
        const info = await deps.engine.getInfo({}, { deadlineMs: 5_000 });
        return { ready: info.ready };
      } catch {
        return { ready: false }; // not an error: the CO retries Probe until ready
      }
    },
  };
}
