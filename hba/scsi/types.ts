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

/** What the target answers. The transport computes the residual from
 * dataIn.length versus dataInCapacity (or dataOut consumed). */
export interface ScsiResult {
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
