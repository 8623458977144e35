// Typed view of the native addon (hba/native/src). This file is the contract
// between the C++ side and the TypeScript engine: every function below is
// implemented in C++ and documented here. Nothing else in the project loads
// the .node file directly.
//
// Division of labour:
//  - C++ owns everything that touches raw fds and guest memory: unix-socket
//    I/O with SCM_RIGHTS, mmap of guest memory regions, eventfds, the split
//    virtqueues (descriptor-chain walk, used ring, notifications), and the
//    READ/WRITE/SYNCHRONIZE CACHE fast path on virtio-scsi request queues
//    (VirtioDevice.setLun; hba/fastpath.ts keeps it in step with hba/scsi).
//  - TypeScript owns the vhost-user message codec and session state machine,
//    virtio-scsi framing and the SCSI target.
import { createRequire } from 'node:module';

/** One message received on a vhost-user socket: the 12-byte header, the body
 * (exactly `size` bytes as the header announced) and the fds that came with
 * it via SCM_RIGHTS. The receiver owns the fds and must close or hand them on. */
export interface RawMessage {
  header: Buffer;
  body: Buffer;
  fds: number[];
}

/** A connected SOCK_STREAM unix socket, driven by libuv on the main loop. */
export interface UnixConnection {
  /** Starts reading. `onMessage` is called once per complete message.
   * The native reader enforces only framing limits (body size <= maxBody,
   * at most 8 fds per message); every semantic check is TypeScript's.
   * `onClose` is called exactly once: on EOF, on a read error, on a framing
   * violation (with a reason), or after close(). */
  start(onMessage: (msg: RawMessage) => void, onClose: (reason: string | null) => void): void;
  /** sendmsg with optional fds (SCM_RIGHTS). Blocking-safe for small messages
   * (vhost-user replies are < 4 KiB). Throws on error. */
  send(data: Buffer, fds?: number[]): void;
  /** Peer credentials (SO_PEERCRED). */
  peerCredentials(): { pid: number; uid: number; gid: number };
  /** Closes the socket; idempotent. */
  close(): void;
}

export interface UnixListener {
  /** Closes the listening socket and unlinks its path; idempotent. */
  close(): void;
}

/** A guest memory region as SET_MEM_TABLE describes it (vhost-user.rst,
 * "Memory regions description"). All numbers are 64-bit. */
export interface MemoryRegionDesc {
  guestPhysAddr: bigint;
  size: bigint;
  userAddr: bigint;
  mmapOffset: bigint;
  /** fd to mmap; ownership passes to the device (closed after mmap or on error). */
  fd: number;
}

export interface VringAddr {
  flags: number;
  /** Front-end (QEMU) virtual addresses, translated through userAddr of the regions. */
  descUserAddr: bigint;
  usedUserAddr: bigint;
  availUserAddr: bigint;
  logGuestAddr: bigint;
}

/** A descriptor chain popped from a virtqueue and handed to TypeScript.
 * `readable` is a copy of all device-readable bytes (driver → device), made
 * once; `writableLength` is the total capacity of the device-writable part. */
export interface PoppedChain {
  queue: number;
  head: number;
  readable: Buffer;
  writableLength: number;
}

export interface DeviceOptions {
  /** Number of virtqueues the device exposes (virtio-scsi: 2 + request queues). */
  numQueues: number;
  /** Maximum queue size accepted in SET_VRING_NUM (power of two, <= 32768). */
  maxQueueSize: number;
  /** Maximum total bytes of one chain (readable + writable); larger chains are
   * a protocol violation. */
  maxChainBytes: number;
  /** Maximum number of memory regions. */
  maxRegions: number;
  /** Called on the main loop with a batch of popped chains. */
  onChains: (chains: PoppedChain[]) => void;
  /** Most chains a queue worker pops per round before publishing the round's
   * fast-path completions with one notification. Default 32; the environment
   * variable VHBA_COMPLETION_BATCH overrides the default (benchmarking). */
  completionBatch?: number;
  /** µs a queue worker keeps polling the avail ring after it ran dry before
   * sleeping on the kick eventfd. Default 0; VHBA_POLL_MICROS overrides. */
  pollMicros?: number;
  /** Called on the main loop when the guest violated the virtio protocol on a
   * queue (descriptor loop, address outside memory, ...). The queue is stopped;
   * the owner closes the connection. */
  onError: (queue: number, reason: string) => void;
}

/** The device side of one vhost-user connection: guest memory table plus
 * virtqueues. Methods throw an Error with a clear message on invalid input;
 * the caller treats that as a protocol violation. */
export interface VirtioDevice {
  setFeatures(features: bigint): void;
  setMemTable(regions: MemoryRegionDesc[]): void;
  setVringNum(queue: number, num: number): void;
  setVringAddr(queue: number, addr: VringAddr): void;
  setVringBase(queue: number, base: number): void;
  /** Stops the queue (waits for its worker) and returns the next avail index. */
  getVringBase(queue: number): number;
  /** -1 means "no fd" (vhost-user NOFD flag, polling mode is not supported). */
  setVringKick(queue: number, fd: number): void;
  setVringCall(queue: number, fd: number): void;
  setVringErr(queue: number, fd: number): void;
  setVringEnable(queue: number, enable: boolean): void;
  /** Writes `data` into the writable descriptors of an in-flight chain (in
   * order; more than writableLength is a programming error and throws), puts
   * the head on the used ring with len = data.length and notifies the driver
   * as EVENT_IDX / NO_INTERRUPT say. Throws if the chain is not in flight. */
  complete(queue: number, head: number, data: Buffer): void;
  /** Stops all queues, unmaps memory, closes fds. The device may be set up
   * again afterwards (RESET_OWNER / RESET_DEVICE). */
  reset(): void;
  /** Per-queue state for diagnostics and tests. */
  queueState(queue: number): { started: boolean; size: number; lastAvail: number; usedIdx: number; inFlight: number };
}

/** A LUN the native fast path may serve (see VirtioDevice.setLun). */
export interface NativeLunConfig {
  /** Backing file for reads, cached writes and fdatasync; duplicated. */
  fd: number;
  /** The same file opened O_DSYNC, for FUA writes and writes with WCE=0;
   * duplicated; -1 only for a read-only LUN. */
  dsyncFd: number;
  /** Logical block size, 512 or 4096. */
  blockSize: number;
  /** Capacity in logical blocks. */
  blockCount: bigint | number;
  /** VPD B0h MAXIMUM TRANSFER LENGTH; longer transfers go to JS. */
  maxTransferBlocks: number;
  readOnly: boolean;
  writeCacheEnabled: boolean;
  /** Served natively only while true (false: every command goes to JS). */
  eligible: boolean;
}

/** A passthrough LUN (issue 8) in a device's LUN table: while eligible, the
 * queue worker forwards every command addressed to it to the device itself
 * (SG_IO or libiscsi, data straight between guest memory and the device),
 * answers opcodes in `refusedOpcodes` with CHECK CONDITION / ILLEGAL REQUEST /
 * INVALID COMMAND OPERATION CODE (20h/00h) without touching the device, and
 * defers opcodes in `deferredOpcodes` (and everything while not eligible) to
 * JS. Status, sense (at most 96 bytes) and residual go back to the guest as
 * the device returned them; transport failures become virtio-scsi response
 * codes (PassthroughOutcome.response). */
export interface NativePassthroughLunConfig {
  /** The open device; shared (the LUN keeps it alive until removed). */
  device: PassthroughDevice;
  /** 32 bytes, bit (opcode & 7) of byte (opcode >> 3): refuse that opcode. */
  refusedOpcodes: Buffer;
  /** 32 bytes, same layout: send that opcode to JS (REPORT LUNS, INQUIRY). */
  deferredOpcodes: Buffer;
  /** Per-command timeout, ms (> 0). */
  timeoutMs: number;
  eligible: boolean;
}

/** Where a passthrough device is. */
export type PassthroughAddress =
  /** A block device or /dev/sg* node (symlinks such as /dev/disk/by-id/* are
   * followed); must answer SG_GET_VERSION_NUM, else open rejects with an
   * error saying the path is not a SCSI device. */
  | { kind: 'sg'; path: string }
  /** An iSCSI LUN; logs in with `initiatorName` (default
   * "iqn.2026-11.io.vhba:<hostname>"). */
  | { kind: 'iscsi'; portal: string; iqn: string; lun: number; initiatorName?: string };

/** One command's result from a passthrough device. */
export interface PassthroughOutcome {
  /** virtio-scsi response code (virtio 1.2 §5.6.6.1; `Response` in
   * hba/virtio-scsi/framing.ts): 0 (OK) means status/sense/data are the device's; any
   * other value means the command did not complete at the device (device
   * gone → BAD_TARGET, timeout → ABORTED, connection lost → TRANSPORT_FAILURE, ...). */
  response: number;
  /** SAM-5 status byte. */
  status: number;
  /** Sense data as the device returned it (empty if none; at most 96 bytes). */
  sense: Buffer;
  /** Data-in bytes transferred (length = dataInLength - residual). */
  dataIn: Buffer;
  /** Bytes of the data transfer that did not happen (SG_IO resid / iSCSI residual). */
  residual: number;
  /** Why the response is not OK (errno text, host/driver status, libiscsi error); '' when OK. */
  error: string;
}

/** An open passthrough device. Thread-safe: the native queue workers and
 * execute() share it (libiscsi contexts are serialized by a mutex). */
export interface PassthroughDevice {
  /** e.g. "/dev/sdb (sg 3.5.36)" or "iscsi://127.0.0.1:3260/iqn.../1". */
  readonly description: string;
  /** Largest data transfer in bytes the host path takes in one command
   * (block queue max_hw_sectors_kb, sg's limit); 0 = no host limit (iSCSI). */
  readonly maxTransferBytes: number;
  /** Runs one command on the libuv thread pool. At most one of dataOut /
   * dataInLength may be non-empty (no bidirectional commands); cdb is 6..32
   * bytes. Rejects only for bad arguments or a closed device; device and
   * transport failures resolve with response != OK. */
  execute(cdb: Buffer, options?: { dataOut?: Buffer; dataInLength?: number; timeoutMs?: number }): Promise<PassthroughOutcome>;
  /** Native commands completed for registered LUNs using this device (monotonic). */
  counters(): NativeLunCounters;
  /** Drops this handle; the fd / iSCSI session closes once no registered LUN
   * and no running execute() uses it. Idempotent. */
  close(): void;
}

/** The mutable part of a registered LUN; omitted fields keep their value. */
export interface NativeLunUpdate {
  blockCount?: bigint | number;
  readOnly?: boolean;
  writeCacheEnabled?: boolean;
  eligible?: boolean;
}

/** Commands the fast path executed on one LUN (monotonic). Reads and writes
 * count successful commands, as LogicalUnit.stats() does. */
export interface NativeLunCounters {
  reads: number;
  writes: number;
  bytesRead: number;
  bytesWritten: number;
  flushes: number;
  /** Commands answered with MEDIUM ERROR (the file I/O failed). */
  errors: number;
}

/** The fast-path part of a VirtioDevice. On request queues (index >= 2) the
 * queue worker executes READ(10/16), WRITE(10/16) (FUA honoured) and
 * SYNCHRONIZE CACHE(10/16) addressed to an eligible registered LUN itself,
 * with preadv/pwritev straight between the file and guest memory, and
 * answers write-protect and LBA-out-of-range failures with CHECK CONDITION;
 * every other chain reaches onChains as before. No JS call per I/O. */
export interface FastPathLuns {
  /** Registers a LUN (throws if the address is taken or the config is bad):
   * a file LUN (NativeLunConfig) or a passthrough LUN (issue 8). For a
   * passthrough LUN, updateLun takes only `eligible`, and lunCounters count
   * data-in commands as reads and data-out commands as writes. */
  setLun(target: number, lun: number, config: NativeLunConfig | NativePassthroughLunConfig): void;
  /** Changes a registered LUN's state (throws if absent). Takes effect for
   * commands popped afterwards. */
  updateLun(target: number, lun: number, update: NativeLunUpdate): void;
  /** Unregisters a LUN; resolves, with its final counters, once no native
   * command uses it any more (undefined if it was not registered). The
   * duplicated fds are closed then. */
  removeLun(target: number, lun: number): Promise<NativeLunCounters | undefined>;
  /** Resolves once the native commands holding the LUN now have finished
   * (with eligible false first: a quiesce point, e.g. before a resize). */
  drainLun(target: number, lun: number): Promise<void>;
  /** The LUN's counters, or undefined if it is not registered. */
  lunCounters(target: number, lun: number): NativeLunCounters | undefined;
}

/** What createDevice returns: the device plus its fast-path LUN table. */
export interface NativeVirtioDevice extends VirtioDevice, FastPathLuns {}

export interface NativeBinding {
  abiVersion: number;
  listenUnix(path: string, mode: number, onConnection: (conn: UnixConnection) => void): UnixListener;
  connectUnix(path: string): UnixConnection;
  /** A connected socketpair, for tests. */
  socketPair(): [UnixConnection, UnixConnection];
  createDevice(options: DeviceOptions): NativeVirtioDevice;
  /** Anonymous shared memory (memfd_create + ftruncate + mmap MAP_SHARED),
   * for test drivers and the benchmark frontend. The ArrayBuffer stays valid
   * while the returned object is referenced. */
  memfd(name: string, size: number): { fd: number; memory: ArrayBuffer };
  eventfd(): number;
  /** Writes 1 to an eventfd. */
  eventfdSignal(fd: number): void;
  /** Waits up to timeoutMs for an eventfd to become readable and consumes it;
   * resolves true if it fired. For test drivers. */
  eventfdWait(fd: number, timeoutMs: number): Promise<boolean>;
  closeFd(fd: number): void;
  /** SO_PEERCRED of a connected unix socket fd the caller owns (the control
   * API checks its peers with it; issue 9). Throws on a non-socket fd. */
  peerCredentialsOfFd?(fd: number): { pid: number; uid: number; gid: number };
  /** Opens a passthrough device (issue 8). Rejects with an Error whose
   * message says what is wrong: no such file, not a block or sg character
   * device, SG_IO not supported (e.g. virtio-blk or NVMe), iSCSI portal
   * unreachable or login refused. */
  openPassthrough(address: PassthroughAddress, options?: { timeoutMs?: number }): Promise<PassthroughDevice>;
  /** fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE): deallocates a
   * byte range of a file so it reads back as zeros. */
  punchHole(fd: number, offset: number, length: number): Promise<void>;
  /** fallocate(FALLOC_FL_ZERO_RANGE), falling back to writing zeros where the
   * filesystem lacks it. */
  zeroRange(fd: number, offset: number, length: number): Promise<void>;
}

const require = createRequire(import.meta.url);

/** The loaded addon. Built by `npm ci` (node-gyp) into hba/native/build. */
export const native: NativeBinding = require('./build/Release/vhba_native.node') as NativeBinding;
