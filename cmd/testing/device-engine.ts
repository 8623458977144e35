// A MemoryEngine (memory-engine.ts) that plays passthrough devices for tests
// of the callers (vhba serve, vhba attach, vhba ls): a hostDevice or iSCSI
// backing named in `devices` attaches and resolves with that identity, as
// hba/engine.ts does after probing; any other is refused the way the engine
// refuses a device that does not speak SCSI. list() reports the identities.
import { isPassthrough, type ControllerInfo, type ControllerOptions, type DeviceIdentity, type Engine, type LunSpec } from '../../hba/engine-api.ts';
import { EngineError } from '../../hba/engine-errors.ts';
import { MemoryEngine, type EngineCall } from './memory-engine.ts';

/** A plausible identity with defaults for what a test does not care about. */
export function deviceIdentity(over: Partial<DeviceIdentity> = {}): DeviceIdentity {
  return {
    peripheralDeviceType: 0, vendor: 'Linux   ', product: 'scsi_debug      ', revision: '0191', serial: '', wwn: '',
    logicalBlockSize: 4096, physicalBlockSize: 4096, sizeBytes: 64 << 20, ...over,
  };
}

/** How a passthrough backing is named in `devices`: its path, or iscsi://portal/iqn/lun. */
export function deviceKey(spec: LunSpec): string {
  const b = spec.backing;
  return b.kind === 'iscsi' ? `iscsi://${b.portal}/${b.iqn}/${b.lun}` : b.kind === 'hostDevice' ? b.path : '';
}

/** The double: a MemoryEngine behind (calls recorded there), devices in front. */
export class DeviceEngine implements Engine {
  readonly devices: Record<string, DeviceIdentity>;
  readonly memory = new MemoryEngine();

  constructor(devices: Record<string, DeviceIdentity>) {
    this.devices = devices;
  }

  /** Every call, as MemoryEngine records them. */
  get calls(): EngineCall[] {
    return this.memory.calls;
  }

  async attachLun(controllerId: string, spec: LunSpec): Promise<DeviceIdentity | void> {
    if (!isPassthrough(spec.backing)) return this.memory.attachLun(controllerId, spec);
    const device = this.devices[deviceKey(spec)];
    if (device === undefined) {
      this.memory.calls.push({ method: 'attachLun', args: [controllerId, spec] });
      throw new EngineError('FAILED_PRECONDITION', `${deviceKey(spec)} is not a SCSI device (SG_IO: ENOTTY); give a SCSI disk's /dev/disk/by-id/ link or its /dev/sg* node`);
    }
    await this.memory.attachLun(controllerId, spec);
    return device;
  }

  list(): ControllerInfo[] {
    return this.memory.list().map((c) => ({
      ...c,
      luns: c.luns.map((l) => (isPassthrough(l.backing) && this.devices[deviceKey(l)] !== undefined ? { ...l, device: this.devices[deviceKey(l)] } : l)),
    }));
  }

  createController(opts: ControllerOptions): Promise<void> {
    return this.memory.createController(opts);
  }

  deleteController(id: string): Promise<void> {
    return this.memory.deleteController(id);
  }

  detachLun(controllerId: string, target: number, lun: number): Promise<void> {
    return this.memory.detachLun(controllerId, target, lun);
  }

  resizeLun(controllerId: string, target: number, lun: number, sizeBytes: number): Promise<void> {
    return this.memory.resizeLun(controllerId, target, lun, sizeBytes);
  }

  flushLun(controllerId: string, target: number, lun: number): Promise<void> {
    return this.memory.flushLun(controllerId, target, lun);
  }

  snapshotLun(controllerId: string, target: number, lun: number, destinationPath: string): Promise<void> {
    return this.memory.snapshotLun(controllerId, target, lun, destinationPath);
  }

  close(): Promise<void> {
    return this.memory.close();
  }
}
