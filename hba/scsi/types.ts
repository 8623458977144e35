// The SCSI target's contract with whatever transport carries it. Nothing in
// hba/scsi/ knows about virtio or vhost-user: a transport decodes its framing
// into a ScsiCommand, calls ScsiTarget.execute, and encodes the ScsiResult.

/** SAM-5 status codes (SAM-5 §5.3). */
export const Status = {
  GOOD: 0x00,
  CHECK_CONDITION: 0x02,
  CONDITION_MET: 0x04,
  BUSY: 0x08,
  RESERVATION_CONFLICT: 0x18,
  TASK_SET_FULL: 0x28,
  ACA_ACTIVE: 0x30,
  TASK_ABORTED: 0x40,
} as const;

/** One command as the transport received it. */
export interface ScsiCommand {
  /** The CDB, copied out of guest memory once by the transport. */
  cdb: Buffer;
  /** Data-out bytes (initiator → target), already copied. Empty for reads. */
  dataOut: Buffer;
  /** Capacity of the data-in buffer the initiator provided, in bytes. */
  dataInCapacity: number;
  /** Task tag, for task management (ABORT TASK). */
  tag: bigint;
}

/** SAM-5 §5.1 service responses other than TASK COMPLETE: the command did
 * not complete at the device server (a passthrough device vanished, timed
 * out, its transport broke). Status and sense are then meaningless; each
 * transport maps these to its own codes (virtio-scsi: the response field). */
export type ServiceFailure =
  | 'bad-target'
  | 'transport-failure'
  | 'aborted'
  | 'busy'
  | 'reset'
  | 'target-failure'
  | 'nexus-failure'
  | 'failure';

/** What the target answers. The transport computes the residual from
 * dataIn.length versus dataInCapacity (or dataOut consumed). */
export interface ScsiResult {
  /** Set when the command did not complete (then status is ignored). */
  serviceFailure?: ServiceFailure;
  status: number;
  /** Fixed-format sense data (SPC-4 §4.5.3) when status is CHECK CONDITION. */
  sense?: Buffer;
  /** Data-in bytes; never longer than dataInCapacity. */
  dataIn?: Buffer;
  /** Bytes of dataOut the command consumed (for the data-out residual);
   * defaults to dataOut.length. */
  dataOutConsumed?: number;
}

/** The block storage behind a disk LogicalUnit. Offsets and lengths are in
 * bytes and always whole logical blocks, already range-checked by the SCSI
 * layer. Implementations: FileBackend (hba/backends/file.ts), MemoryBackend
 * (hba/backends/memory.ts, for tests). */
export interface BlockBackend {
  /** Current size in bytes. */
  size(): number;
  read(offset: number, length: number): Promise<Buffer>;
  /** `fua`: the data is durable when the promise resolves. */
  write(offset: number, data: Buffer, fua: boolean): Promise<void>;
  /** Makes every completed write durable (fdatasync). */
  flush(): Promise<void>;
  /** Deallocates a range; reads of it then return zeros (punch hole). */
  discard(offset: number, length: number): Promise<void>;
  /** Writes zeros over a range (may deallocate). */
  writeZeroes(offset: number, length: number): Promise<void>;
  /** Grows or shrinks to `bytes`. */
  resize(bytes: number): Promise<void>;
  close(): Promise<void>;
}

/** Identity and geometry of a disk LU; snapshotted per command. */
export interface LogicalUnitParams {
  /** 512 or 4096. */
  logicalBlockSize: number;
  /** 512, 4096 (512e when logical is 512) ... a multiple of logicalBlockSize. */
  physicalBlockSize: number;
  /** Unit serial number, VPD 0x80; <= 20 printable ASCII characters. */
  serial: string;
  /** NAA designator as hex without 0x: 16 hex digits (NAA 2/3/5) or 32 (NAA 6). */
  wwn: string;
  readOnly: boolean;
  /** Product identification in standard INQUIRY (16 chars max). */
  product?: string;
  /** Write cache enabled at start (MODE SENSE caching page WCE). Default true. */
  writeCacheEnabled?: boolean;
  /** Device provisioning: thin-provisioned (UNMAP supported) or not. Default true. */
  thinProvisioned?: boolean;
}

/** A logical unit as a ScsiTarget holds it: an emulated disk (LogicalUnit)
 * or a passthrough LUN (PassthroughUnit, issue 8). */
export interface ScsiUnit {
  /** Runs one command; never rejects. */
  execute(cmd: ScsiCommand): Promise<ScsiResult>;
  /** Queues REPORTED LUNS DATA HAS CHANGED (SPC-4 §6.33). */
  raiseReportedLunsChanged(): void;
  /** Drops a pending unit attention with this ASC/ASCQ, if queued. */
  clearUnitAttention(code: { asc: number; ascq: number }): void;
  /** LOGICAL UNIT RESET / I_T NEXUS RESET (SAM-5 §6.4). */
  reset(): void;
  /** Commands running now. */
  readonly inFlight: number;
  /** Waits for running commands, then releases the backing. */
  close(): Promise<void>;
}

/** What a passthrough device reported about itself at attach (SPC-4 §6.6
 * INQUIRY, §7.8.16 VPD 80h, §7.8.6 VPD 83h; SBC-3 §5.16 READ CAPACITY(16)). */
export interface DeviceIdentity {
  /** Standard INQUIRY byte 0 bits 4..0 (0 = direct access block device). */
  peripheralDeviceType: number;
  vendor: string;
  product: string;
  revision: string;
  /** VPD 80h unit serial number, trimmed; '' if the device has none. */
  serial: string;
  /** VPD 83h NAA designator of the logical unit, lowercase hex without 0x; '' if none. */
  wwn: string;
  /** READ CAPACITY(16) (or (10)); 0 for devices without block geometry. */
  logicalBlockSize: number;
  physicalBlockSize: number;
  sizeBytes: number;
}
