// Who may connect, and how much one controller may take (issue 9; the model is
// written down in docs/security.md):
//  - private directories for sockets: created 0700 (or 0750), owned by us or
//    root, never group/other-writable, never a symlink;
//  - peer credentials (SO_PEERCRED, unix(7)) checked against an allow list of
//    uids and gids; default: root and the engine's own uid;
//  - per-controller resource limits, reported in errors and for metrics.
import { chmodSync, lchownSync, lstatSync, mkdirSync } from 'node:fs';

/** Credentials the kernel recorded when the peer called connect(). */
export interface PeerCredentials { pid: number; uid: number; gid: number }

/** Who may use a socket: a peer is allowed if its uid or its gid is listed. */
export interface PeerPolicy { uids: ReadonlySet<number>; gids: ReadonlySet<number> }

/** Root and the engine's own uid (the default of the control API). */
export function defaultPeerPolicy(): PeerPolicy {
  return { uids: new Set([0, process.getuid?.() ?? 0]), gids: new Set() };
}

/** Parses an allow list such as "uid:0,uid:1000,gid:64055" (VHBA_CONTROL_ALLOW);
 * empty or undefined gives the default. Throws on a malformed entry. */
export function parsePeerPolicy(text: string | undefined): PeerPolicy {
  if (!text || !text.trim()) return defaultPeerPolicy();
  const uids = new Set<number>();
  const gids = new Set<number>();
  for (const entry of text.split(',').map((e) => e.trim()).filter(Boolean)) {
    const m = /^(uid|gid):(\d{1,10})$/.exec(entry);
    if (!m || Number(m[2]) > 0xffffffff) throw new Error(`allow list entry ${JSON.stringify(entry)}: expected uid:N or gid:N`);
    (m[1] === 'uid' ? uids : gids).add(Number(m[2]));
  }
  return { uids, gids };
}

/** null if `peer` may connect, else the reason (for the log; never sent to the peer). */
export function peerRejection(policy: PeerPolicy, peer: PeerCredentials): string | null {
  if (policy.uids.has(peer.uid) || policy.gids.has(peer.gid)) return null;
  return `peer pid ${peer.pid} uid ${peer.uid} gid ${peer.gid} is not in the allow list (uids ${[...policy.uids].join(',') || '-'}; gids ${[...policy.gids].join(',') || '-'})`;
}

/** Creates `path` (and parents) for sockets and makes sure nobody else can
 * write it: a real directory (not a symlink), owned by us or root, mode
 * exactly `mode` (0700 or 0750; tightened if we own it). Throws otherwise. */
export function ensurePrivateDir(path: string, mode: 0o700 | 0o750 = 0o700): void {
  mkdirSync(path, { recursive: true, mode });
  const st = lstatSync(path);
  if (!st.isDirectory()) throw new Error(`socket directory ${path} is not a directory (a symlink?)`);
  const me = process.getuid?.() ?? 0;
  if (st.uid !== me && st.uid !== 0) throw new Error(`socket directory ${path} is owned by uid ${st.uid}, not by us (${me}) or root`);
  if ((st.mode & 0o777) !== mode) {
    if (st.uid !== me) throw new Error(`socket directory ${path} has mode ${(st.mode & 0o777).toString(8)}, want ${mode.toString(8)}, and is not ours to change`);
    chmodSync(path, mode);
  }
}

/** Per-controller resource limits: what one VM can make the engine hold. */
export interface ControllerLimits {
  /** virtio-scsi request queues (each: a ring, a kick eventfd, a call eventfd). */
  maxRequestQueues: number;
  /** Largest ring size (descriptors) accepted in SET_VRING_NUM. */
  maxQueueSize: number;
  /** Guest memory regions per SET_MEM_TABLE (mmaps). */
  maxMemoryRegions: number;
  /** LUNs attached to one controller. */
  maxLuns: number;
}

/** The defaults; VHBA_LIMIT_* environment variables override (see limitsFromEnv). */
export const DEFAULT_CONTROLLER_LIMITS: ControllerLimits = Object.freeze({
  maxRequestQueues: 16,
  maxQueueSize: 1024,
  maxMemoryRegions: 8, // QEMU's VHOST_MEMORY_BASELINE_NREGIONS; the native device enforces its own cap too
  maxLuns: 256,
});

/** In-flight requests per controller are bounded by the rings themselves: a
 * request holds its descriptor head until completed (virtio 1.2 §2.7.13), so
 * at most queues × queue size (control and event queues included). */
export function maxInFlight(limits: ControllerLimits): number {
  return (limits.maxRequestQueues + 2) * limits.maxQueueSize;
}

/** Limits from VHBA_LIMIT_REQUEST_QUEUES, _QUEUE_SIZE, _MEMORY_REGIONS, _LUNS. */
export function limitsFromEnv(env: NodeJS.ProcessEnv = process.env): ControllerLimits {
  const pick = (name: string, fallback: number): number => {
    const v = env[name];
    if (v === undefined || v === '') return fallback;
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`${name}=${v}: expected a positive integer`);
    return n;
  };
  const d = DEFAULT_CONTROLLER_LIMITS;
  return {
    maxRequestQueues: pick('VHBA_LIMIT_REQUEST_QUEUES', d.maxRequestQueues),
    maxQueueSize: pick('VHBA_LIMIT_QUEUE_SIZE', d.maxQueueSize),
    maxMemoryRegions: pick('VHBA_LIMIT_MEMORY_REGIONS', d.maxMemoryRegions),
    maxLuns: pick('VHBA_LIMIT_LUNS', d.maxLuns),
  };
}

/** A request that would exceed a limit; the message names the limit, the asked value and the maximum. */
export class LimitExceededError extends Error {
  readonly limit: keyof ControllerLimits;
  readonly requested: number;
  readonly maximum: number;
  constructor(limit: keyof ControllerLimits, requested: number, maximum: number) {
    super(`limit ${limit} exceeded: requested ${requested}, at most ${maximum} per controller`);
    this.name = 'LimitExceededError';
    this.limit = limit;
    this.requested = requested;
    this.maximum = maximum;
  }
}

/** Checks a new controller's shape against the limits. */
export function checkControllerShape(limits: ControllerLimits, shape: { numRequestQueues: number; maxQueueSize: number }): void {
  if (shape.numRequestQueues > limits.maxRequestQueues) throw new LimitExceededError('maxRequestQueues', shape.numRequestQueues, limits.maxRequestQueues);
  if (shape.maxQueueSize > limits.maxQueueSize) throw new LimitExceededError('maxQueueSize', shape.maxQueueSize, limits.maxQueueSize);
}

/** Checks that one more LUN fits on a controller that has `current`. */
export function checkLunCount(limits: ControllerLimits, current: number): void {
  if (current + 1 > limits.maxLuns) throw new LimitExceededError('maxLuns', current + 1, limits.maxLuns);
}

/** The limits as metric samples (gauge name → value), for /metrics exporters. */
export function limitMetrics(limits: ControllerLimits): Record<string, number> {
  return {
    vhba_controller_limit_request_queues: limits.maxRequestQueues,
    vhba_controller_limit_queue_size: limits.maxQueueSize,
    vhba_controller_limit_memory_regions: limits.maxMemoryRegions,
    vhba_controller_limit_luns: limits.maxLuns,
    vhba_controller_limit_in_flight: maxInFlight(limits),
  };
}

/** Checks an existing socket directory without changing it: a real
 * directory, owned by us, root or the configured socket owner uid (`ownerUid`,
 * e.g. KubeVirt's qemu, 107), writable by nobody else (no group/other write
 * bit), so no one else can replace or add a socket in it. Throws otherwise. */
export function checkSocketDir(path: string, ownerUid?: number): void {
  const st = lstatSync(path);
  if (!st.isDirectory()) throw new Error(`socket directory ${path} is not a directory (a symlink?)`);
  const me = process.getuid?.() ?? 0;
  if (st.uid !== me && st.uid !== 0 && st.uid !== ownerUid) {
    throw new Error(`socket directory ${path} is owned by uid ${st.uid}, not by us (${me}), root${ownerUid === undefined ? '' : ` or the socket owner (${ownerUid})`}`);
  }
  if ((st.mode & 0o022) !== 0) throw new Error(`socket directory ${path} has mode ${(st.mode & 0o777).toString(8)}: group or others may write it`);
}

/** Who owns the vhost-user sockets and their directories (`vhba engine
 * --socket-owner UID[:GID] --socket-mode 0600|0660`): in KubeVirt QEMU runs
 * as qemu (107) in virt-launcher, not as the engine's uid. */
export interface SocketOwnership {
  uid: number;
  gid: number;
  /** Socket mode: 0600 (owner only) or 0660 (owner and its group). */
  mode: 0o600 | 0o660;
}

/** Parses "UID[:GID]" (GID defaults to UID). Throws on anything else. */
export function parseSocketOwner(text: string): { uid: number; gid: number } {
  const m = /^(\d{1,10})(?::(\d{1,10}))?$/.exec(text.trim());
  const uid = Number(m?.[1]);
  const gid = m?.[2] === undefined ? uid : Number(m[2]);
  if (!m || uid > 0xfffffffe || gid > 0xfffffffe) throw new Error(`socket owner ${JSON.stringify(text)}: expected UID or UID:GID (numbers)`);
  return { uid, gid };
}

/** Parses a socket mode: "0600" or "0660" (octal). Throws on anything else. */
export function parseSocketMode(text: string): 0o600 | 0o660 {
  if (text === '0600' || text === '600') return 0o600;
  if (text === '0660' || text === '660') return 0o660;
  throw new Error(`socket mode ${JSON.stringify(text)}: expected 0600 or 0660`);
}

/** The mode of a socket's directory: 0700 for 0600 sockets, 0750 for 0660
 * ones (the group must reach the socket, nobody else may). */
export function socketDirMode(socketMode: 0o600 | 0o660): 0o700 | 0o750 {
  return socketMode === 0o660 ? 0o750 : 0o700;
}

/** Hands an existing socket directory to the socket owner: it must be a real
 * directory owned by us, root or the owner already; it is then chowned to
 * owner uid:gid (lchown: a symlink swapped in is not followed) with mode
 * socketDirMode(mode), so only root and the owner (and with 0660 its group)
 * reach it. Throws otherwise. */
export function claimSocketDir(path: string, owner: SocketOwnership): void {
  checkSocketDir(path, owner.uid);
  lchownSync(path, owner.uid, owner.gid);
  chmodSync(path, socketDirMode(owner.mode));
  const st = lstatSync(path);
  if (!st.isDirectory() || st.uid !== owner.uid || st.gid !== owner.gid) throw new Error(`socket directory ${path} changed while being handed to uid ${owner.uid}`);
}
