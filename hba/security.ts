// Who may connect, and how much one controller may take (issue 9; the model is
// written down in docs/security.md):
//  - private directories for sockets: created 0700 (or 0750), owned by us or
//    root, never group/other-writable, never a symlink;
//  - peer credentials (SO_PEERCRED, unix(7)) checked against an allow list of
//    uids and gids; default: root and the engine's own uid;
//  - per-controller resource limits, reported in errors and for metrics.
import { chmodSync, lstatSync, mkdirSync } from 'node:fs';

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
 * directory, owned by us or root, writable by nobody else (no group/other
 * write bit), so no one else can replace or add a socket in it. Throws otherwise. */
export function checkSocketDir(path: string): void {
  const st = lstatSync(path);
  if (!st.isDirectory()) throw new Error(`socket directory ${path} is not a directory (a symlink?)`);
  const me = process.getuid?.() ?? 0;
  if (st.uid !== me && st.uid !== 0) throw new Error(`socket directory ${path} is owned by uid ${st.uid}, not by us (${me}) or root`);
  if ((st.mode & 0o022) !== 0) throw new Error(`socket directory ${path} has mode ${(st.mode & 0o777).toString(8)}: group or others may write it`);
}
