// Test harness for the native VirtioDevice: a device with recording
// callbacks plus a mock driver (guest memory + queue) wired to it.
import { native, type NativeVirtioDevice, type PoppedChain } from './index.ts';
import { MockGuestMemory, MockSplitQueue, type MockGuestMemoryOptions } from '../virtio/mock-driver.ts';
import { VirtioFeature } from '../virtio/ring-layout.ts';

/** Features a modern Linux driver negotiates for our rings. */
export const DEFAULT_FEATURES = VirtioFeature.VERSION_1 | VirtioFeature.RING_INDIRECT_DESC | VirtioFeature.RING_EVENT_IDX;

/** A device whose callbacks record what they get. */
export interface RecordingDevice {
  device: NativeVirtioDevice;
  /** Every onChains batch in arrival order. */
  batches: PoppedChain[][];
  /** Every chain of every batch. */
  chains: PoppedChain[];
  errors: { queue: number; reason: string }[];
}

/** Options of createRecordingDevice. */
export interface RecordingDeviceOptions {
  numQueues?: number;
  maxQueueSize?: number;
  maxChainBytes?: number;
  maxRegions?: number;
}

/** createDevice with recording callbacks. */
export function createRecordingDevice(options: RecordingDeviceOptions = {}): RecordingDevice {
  const rec: RecordingDevice = { device: undefined as unknown as NativeVirtioDevice, batches: [], chains: [], errors: [] };
  rec.device = native.createDevice({
    numQueues: options.numQueues ?? 2,
    maxQueueSize: options.maxQueueSize ?? 256,
    maxChainBytes: options.maxChainBytes ?? 1 << 20,
    maxRegions: options.maxRegions ?? 8,
    onChains: (chains) => {
      rec.batches.push(chains);
      rec.chains.push(...chains);
    },
    onError: (queue, reason) => rec.errors.push({ queue, reason }),
  });
  return rec;
}

/** Polls `predicate` until true or the timeout passes (then throws). */
export async function waitFor(predicate: () => boolean, timeoutMs = 3000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** Lets the device's workers run for `ms` (for "nothing happens" checks). */
export function settle(ms = 50): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A device, guest memory and one configured, running queue 0. */
export interface Rig extends RecordingDevice {
  memory: MockGuestMemory;
  queue: MockSplitQueue;
  /** Stops the device and frees the driver's fds. */
  close(): void;
}

/** Options of setupRig. */
export interface RigOptions extends RecordingDeviceOptions {
  features?: bigint;
  queueSize?: number;
  memorySize?: number;
  memory?: MockGuestMemoryOptions;
  /** Skip configuring queue 0 (for tests that set rings up by hand). */
  unconfigured?: boolean;
}

/** Builds a device and a mock driver with queue 0 configured and started. */
export async function setupRig(options: RigOptions = {}): Promise<Rig> {
  const rec = createRecordingDevice(options);
  const memory = new MockGuestMemory(native, options.memorySize ?? 1 << 20, options.memory);
  rec.device.setFeatures(options.features ?? DEFAULT_FEATURES);
  rec.device.setMemTable(await memory.regions());
  const queue = new MockSplitQueue(memory, options.queueSize ?? 16);
  if (!options.unconfigured) await queue.configure(rec.device, 0);
  return {
    ...rec,
    memory,
    queue,
    close() {
      rec.device.reset();
      queue.close();
      memory.close();
    },
  };
}
