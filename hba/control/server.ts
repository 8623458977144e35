// The engine's control API (protos/vhba/hba/v1/hba.proto) served over a local
// unix socket with grpc-js. A thin translation layer: requests are validated
// here (INVALID_ARGUMENT with a message naming the field), the Engine does the
// work, and engine errors that carry a gRPC code keep it.
import * as grpc from '@grpc/grpc-js';
import { chmodSync, rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { dirname, isAbsolute, relative, resolve, sep } from 'node:path';
import type { Logger } from 'pino';
import { addService, GrpcError } from '../../protos/grpc.ts';
import {
  EngineService,
  type Address,
  type AttachLunRequest,
  type DeviceIdentitySchema,
  type LunParameters,
  type LunStatusSchema,
  type PassthroughPolicy as PassthroughPolicyMessage,
  type PassthroughPolicySchema,
} from '../../protos/gen/vhba/hba/v1/hba_pb.ts';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { isPassthrough, MAX_LUNS_PER_TARGET, MAX_TARGETS, type DeviceIdentity, type Engine, type LunInfo, type LunSpec, type PassthroughPolicy } from '../engine-api.ts';
import { EngineError } from '../engine-errors.ts';
import { native } from '../native/index.ts';
// H9 (issue 9): private socket directory, SO_PEERCRED allow list, per-controller limits.
import { checkControllerShape, checkLunCount, defaultPeerPolicy, ensurePrivateDir, limitsFromEnv, LimitExceededError, peerRejection, type ControllerLimits, type PeerPolicy } from '../security.ts';

const VERSION = '0.1.0';

function invalid(message: string): never {
  throw new GrpcError(grpc.status.INVALID_ARGUMENT, message);
}

function checkAddress(a: Address | undefined): { target: number; lun: number } {
  if (!a) invalid('address is required');
  if (a.target >= MAX_TARGETS) invalid(`address.target ${a.target} is out of range: allowed 0–${MAX_TARGETS - 1}`);
  if (a.lun >= MAX_LUNS_PER_TARGET) invalid(`address.lun ${a.lun} is out of range: allowed 0–${MAX_LUNS_PER_TARGET - 1}`);
  return { target: a.target, lun: a.lun };
}

function checkSize(bytes: bigint, field: string): number {
  if (bytes === 0n) invalid(`${field} must be greater than 0`);
  if (bytes > BigInt(Number.MAX_SAFE_INTEGER)) invalid(`${field} ${bytes} is too large: at most ${Number.MAX_SAFE_INTEGER}`);
  return Number(bytes);
}

/** Largest per-command timeout a passthrough policy may ask for: one hour. */
const MAX_PASSTHROUGH_TIMEOUT_MS = 3_600_000;

/** Translates and validates AttachLun into the engine's LunSpec. Emulated
 * backings (file, memory) need `parameters`; passthrough backings
 * (host_device, iscsi) ignore them and take `passthrough` (may be absent:
 * default policy). */
export function lunSpecFromRequest(
  address: Address | undefined,
  backing: AttachLunRequest['backing'] | { case: 'file'; value: { path: string } } | { case: 'memory'; value: unknown },
  p: LunParameters | undefined,
  passthrough?: PassthroughPolicyMessage,
): LunSpec {
  const { target, lun } = checkAddress(address);
  if (backing.case === 'hostDevice') {
    if (!isAbsolute(backing.value.path)) invalid(`host_device.path ${JSON.stringify(backing.value.path)} must be absolute`);
    return { target, lun, backing: { kind: 'hostDevice', path: backing.value.path, policy: policyFromRequest(passthrough) } };
  }
  if (backing.case === 'iscsi') {
    const v = backing.value;
    if (!/^[^\s/]+:[0-9]{1,5}$/.test(v.portal) && !/^[^\s/:]+$/.test(v.portal)) invalid(`iscsi.portal ${JSON.stringify(v.portal)} must be host or host:port, e.g. 192.0.2.10:3260`);
    if (!/^(iqn\.|eui\.|naa\.)\S+$/.test(v.iqn)) invalid(`iscsi.iqn ${JSON.stringify(v.iqn)} must be an iSCSI name (iqn., eui. or naa.)`);
    if (v.lun >= MAX_LUNS_PER_TARGET) invalid(`iscsi.lun ${v.lun} is out of range: allowed 0–${MAX_LUNS_PER_TARGET - 1}`);
    if (v.initiatorName !== '' && !/^(iqn\.|eui\.|naa\.)\S+$/.test(v.initiatorName)) invalid(`iscsi.initiator_name ${JSON.stringify(v.initiatorName)} must be an iSCSI name (iqn., eui. or naa.) or empty`);
    return {
      target,
      lun,
      backing: { kind: 'iscsi', portal: v.portal, iqn: v.iqn, lun: v.lun, ...(v.initiatorName ? { initiatorName: v.initiatorName } : {}), policy: policyFromRequest(passthrough) },
    };
  }
  if (!p) invalid('parameters are required');
  const sizeBytes = checkSize(p.sizeBytes, 'parameters.size_bytes');
  const logical = p.logicalBlockSize || 512;
  if (logical !== 512 && logical !== 4096) invalid(`parameters.logical_block_size ${logical} is not supported: allowed 512 or 4096`);
  const physical = p.physicalBlockSize || Math.max(logical, 4096);
  if (physical < logical || physical % logical !== 0 || physical > 65536 || (physical & (physical - 1)) !== 0) {
    invalid(`parameters.physical_block_size ${physical} must be a power of two multiple of logical_block_size ${logical}, at most 65536`);
  }
  if (sizeBytes % logical !== 0) invalid(`parameters.size_bytes ${sizeBytes} must be a multiple of logical_block_size ${logical}`);
  if (p.serial.length > 20 || !/^[\x20-\x7e]*$/.test(p.serial)) invalid('parameters.serial must be at most 20 printable ASCII characters');
  if (!/^([235][0-9a-fA-F]{15}|6[0-9a-fA-F]{31})$/.test(p.wwn)) {
    invalid('parameters.wwn must be an NAA designator in hex without 0x: 16 digits starting with 2, 3 or 5, or 32 digits starting with 6');
  }
  if (p.product.length > 16 || !/^[\x20-\x7e]*$/.test(p.product)) invalid('parameters.product must be at most 16 printable ASCII characters');
  let spec: LunSpec['backing'];
  if (backing.case === 'file') {
    if (!isAbsolute(backing.value.path)) invalid(`file.path ${JSON.stringify(backing.value.path)} must be absolute`);
    spec = { kind: 'file', path: backing.value.path, sizeBytes };
  } else if (backing.case === 'memory') {
    spec = { kind: 'memory', sizeBytes };
  } else {
    invalid('a backing (file, memory, host_device or iscsi) is required');
  }
  return {
    target,
    lun,
    backing: spec,
    params: {
      logicalBlockSize: logical,
      physicalBlockSize: physical,
      serial: p.serial,
      wwn: p.wwn.toLowerCase(),
      readOnly: p.readOnly,
      ...(p.product ? { product: p.product } : {}),
    },
  };
}

/** The engine's PassthroughPolicy from the request's (absent → defaults);
 * unset optional fields stay absent so equal requests give equal specs. */
function policyFromRequest(m: PassthroughPolicyMessage | undefined): PassthroughPolicy {
  if (!m) return { rawio: false };
  if (m.timeoutMs > MAX_PASSTHROUGH_TIMEOUT_MS) invalid(`passthrough.timeout_ms ${m.timeoutMs} is too large: at most ${MAX_PASSTHROUGH_TIMEOUT_MS}`);
  if (m.expectedWwn !== '' && !/^([235][0-9a-fA-F]{15}|6[0-9a-fA-F]{31})$/.test(m.expectedWwn)) {
    invalid('passthrough.expected_wwn must be an NAA designator in hex without 0x: 16 digits starting with 2, 3 or 5, or 32 digits starting with 6');
  }
  if (m.expectedSerial.length > 255 || !/^[\x20-\x7e]*$/.test(m.expectedSerial)) invalid('passthrough.expected_serial must be printable ASCII');
  return {
    rawio: m.rawio,
    ...(m.timeoutMs ? { timeoutMs: m.timeoutMs } : {}),
    ...(m.expectedWwn ? { expectedWwn: m.expectedWwn.toLowerCase() } : {}),
    ...(m.expectedSerial.trim() ? { expectedSerial: m.expectedSerial.trim() } : {}),
  };
}

function policyMessage(p: PassthroughPolicy): MessageInitShape<typeof PassthroughPolicySchema> {
  return { rawio: p.rawio, timeoutMs: p.timeoutMs ?? 0, expectedWwn: p.expectedWwn ?? '', expectedSerial: p.expectedSerial ?? '' };
}

/** DeviceIdentity as the proto message. */
export function deviceIdentityMessage(d: DeviceIdentity): MessageInitShape<typeof DeviceIdentitySchema> {
  return {
    peripheralDeviceType: d.peripheralDeviceType,
    vendor: d.vendor,
    product: d.product,
    revision: d.revision,
    serial: d.serial,
    wwn: d.wwn,
    logicalBlockSize: d.logicalBlockSize,
    physicalBlockSize: d.physicalBlockSize,
    sizeBytes: BigInt(d.sizeBytes),
  };
}

/** One LUN of ListControllers: emulated LUNs carry backing_path and
 * parameters; passthrough LUNs their backing, policy and device identity. */
export function lunStatus(l: LunInfo): MessageInitShape<typeof LunStatusSchema> {
  const counters = { reads: BigInt(l.reads), writes: BigInt(l.writes), bytesRead: BigInt(l.bytesRead), bytesWritten: BigInt(l.bytesWritten) };
  const address = { target: l.target, lun: l.lun };
  const b = l.backing;
  if (isPassthrough(b)) {
    return {
      address,
      backingPath: '',
      ...counters,
      ...(b.kind === 'hostDevice' ? { hostDevice: { path: b.path } } : { iscsi: { portal: b.portal, iqn: b.iqn, lun: b.lun, initiatorName: b.initiatorName ?? '' } }),
      passthrough: policyMessage(b.policy),
      ...(l.device ? { device: deviceIdentityMessage(l.device) } : {}),
    };
  }
  return {
    address,
    backingPath: b.kind === 'file' ? b.path : '',
    ...(l.params
      ? {
          parameters: {
            sizeBytes: BigInt(b.sizeBytes),
            logicalBlockSize: l.params.logicalBlockSize,
            physicalBlockSize: l.params.physicalBlockSize,
            serial: l.params.serial,
            wwn: l.params.wwn,
            readOnly: l.params.readOnly,
            product: l.params.product ?? '',
          },
        }
      : {}),
    ...counters,
  };
}

function engineErrorToGrpc(err: unknown): never {
  if (err instanceof GrpcError) throw err;
  if (err instanceof EngineError) throw new GrpcError(err.grpcCode, err.message);
  throw err;
}

export interface ControlServer {
  readonly address: string;
  close(): Promise<void>;
}

/** Options of startControlServer. */
export interface ControlServerOptions {
  /** When set, CreateController accepts only socket paths inside this directory. */
  socketRoot?: string;
  /** H9: who may connect (SO_PEERCRED); default root and the engine's uid. */
  peerPolicy?: PeerPolicy;
  /** H9: per-controller limits; default limitsFromEnv(). */
  limits?: ControllerLimits;
}

/** H9: a limit breach as RESOURCE_EXHAUSTED naming the limit and its maximum. */
function limitToGrpc(err: unknown): never {
  if (err instanceof LimitExceededError) throw new GrpcError(grpc.status.RESOURCE_EXHAUSTED, err.message);
  throw err;
}

/** H9: null if the peer of `socket` may use the control API, else why not.
 * Fails closed: no fd or no native getsockopt means no access. */
export function peerRejectionOf(socket: Socket, policy: PeerPolicy): string | null {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) return 'no file descriptor for the connection';
  if (typeof native.peerCredentialsOfFd !== 'function') return 'the native addon lacks peerCredentialsOfFd (rebuild it)';
  try {
    return peerRejection(policy, native.peerCredentialsOfFd(fd));
  } catch (err) {
    return `SO_PEERCRED failed: ${(err as Error).message}`;
  }
}

/** Whether `path` lies strictly inside `root` (both resolved; no `..` escape). */
export function isInside(root: string, path: string): boolean {
  const rel = relative(resolve(root), resolve(path));
  return rel !== '' && !rel.startsWith(`..${sep}`) && rel !== '..' && !isAbsolute(rel);
}

/** Serves the EngineService for `engine` on a unix socket (mode 0600 inside a
 * directory created 0700 when missing). */
export async function startControlServer(engine: Engine, socketPath: string, log?: Logger, options: ControlServerOptions = {}): Promise<ControlServer> {
  ensurePrivateDir(dirname(socketPath)); // H9: 0700, ours or root's, not a symlink
  rmSync(socketPath, { force: true });
  const limits = options.limits ?? limitsFromEnv();
  const peerPolicy = options.peerPolicy ?? defaultPeerPolicy();
  const server = new grpc.Server();
  addService(
    server,
    EngineService,
    {
      async createController(req) {
        if (!req.id) invalid('id is required');
        if (!isAbsolute(req.socketPath)) invalid(`socket_path ${JSON.stringify(req.socketPath)} must be absolute`);
        if (options.socketRoot !== undefined && !isInside(options.socketRoot, req.socketPath)) {
          invalid(`socket_path ${JSON.stringify(req.socketPath)} must be inside the engine's socket directory ${options.socketRoot}`);
        }
        if (req.numRequestQueues > 16) invalid(`num_request_queues ${req.numRequestQueues} is too large: at most 16`);
        if (req.maxQueueSize !== 0 && (req.maxQueueSize & (req.maxQueueSize - 1)) !== 0) invalid('max_queue_size must be a power of two');
        try { checkControllerShape(limits, { numRequestQueues: req.numRequestQueues || 1, maxQueueSize: req.maxQueueSize || 0 }); } catch (err) { limitToGrpc(err); } // H9
        await engine
          .createController({
            id: req.id,
            socketPath: req.socketPath,
            numRequestQueues: req.numRequestQueues || 1,
            ...(req.maxQueueSize ? { maxQueueSize: req.maxQueueSize } : {}),
          })
          .catch(engineErrorToGrpc);
        return {};
      },
      async deleteController(req) {
        if (!req.id) invalid('id is required');
        await engine.deleteController(req.id).catch(engineErrorToGrpc);
        return {};
      },
      async attachLun(req) {
        if (!req.controllerId) invalid('controller_id is required');
        const spec = lunSpecFromRequest(req.address, req.backing, req.parameters, req.passthrough);
        const existing = engine.list().find((c) => c.id === req.controllerId); // H9: LUNs per controller
        if (existing) try { checkLunCount(limits, existing.luns.length); } catch (err) { limitToGrpc(err); }
        const device = await engine.attachLun(req.controllerId, spec).catch(engineErrorToGrpc);
        return device ? { device: deviceIdentityMessage(device) } : {};
      },
      async detachLun(req) {
        const a = checkAddress(req.address);
        await engine.detachLun(req.controllerId, a.target, a.lun).catch(engineErrorToGrpc);
        return {};
      },
      async resizeLun(req) {
        const a = checkAddress(req.address);
        const size = checkSize(req.sizeBytes, 'size_bytes');
        await engine.resizeLun(req.controllerId, a.target, a.lun, size).catch(engineErrorToGrpc);
        return {};
      },
      async flushLun(req) {
        const a = checkAddress(req.address);
        await engine.flushLun(req.controllerId, a.target, a.lun).catch(engineErrorToGrpc);
        return {};
      },
      async snapshotLun(req) {
        const a = checkAddress(req.address);
        if (!isAbsolute(req.destinationPath)) invalid(`destination_path ${JSON.stringify(req.destinationPath)} must be absolute`);
        await engine.snapshotLun(req.controllerId, a.target, a.lun, req.destinationPath).catch(engineErrorToGrpc);
        return {};
      },
      async listControllers(req) {
        const all = engine.list().filter((c) => !req.id || c.id === req.id);
        return {
          controllers: all.map((c) => ({
            id: c.id,
            socketPath: c.socketPath,
            numRequestQueues: c.numRequestQueues,
            connected: c.connected,
            luns: c.luns.map(lunStatus),
            requestQueues: (c.requestQueues ?? []).map((q) => ({ queue: q.queue, commands: BigInt(q.commands), inFlight: q.inFlight, availIndex: q.availIndex })),
          })),
        };
      },
      async getInfo() {
        const list = engine.list();
        return { version: VERSION, ready: true, controllers: list.length, luns: list.reduce((n, c) => n + c.luns.length, 0) };
      },
    },
    async (method, run, request) => {
      const start = performance.now();
      try {
        const res = await run();
        log?.info({ method, ms: +(performance.now() - start).toFixed(2) }, 'control call');
        return res;
      } catch (err) {
        const code = err instanceof GrpcError ? grpc.status[err.code] : 'INTERNAL';
        log?.warn({ method, code, err: (err as Error).message, request }, 'control call failed');
        throw err;
      }
    },
  );
  const address = `unix://${socketPath}`;
  // H9: we own the listening socket (node:net) so every accepted connection's
  // SO_PEERCRED is checked before grpc-js sees a byte; allowed ones are handed
  // to grpc-js through its connection injector. Rejected peers are closed.
  const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
  const sockets = new Set<Socket>();
  const listener = createServer({ pauseOnConnect: true }, (socket) => {
    const reason = peerRejectionOf(socket, peerPolicy);
    if (reason !== null) {
      log?.warn({ reason }, 'control connection refused');
      socket.destroy();
      return;
    }
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    injector.injectConnection(socket);
    socket.resume();
  });
  await new Promise<void>((resolve, reject) => {
    listener.once('error', reject);
    listener.listen(socketPath, () => { listener.off('error', reject); resolve(); });
  });
  chmodSync(socketPath, 0o600); // the directory (0700) already keeps others out in the meantime
  return {
    address,
    close: () =>
      new Promise<void>((resolve) => {
        listener.close();
        injector.drain(0);
        server.tryShutdown(() => {
          injector.destroy();
          for (const s of sockets) s.destroy();
          rmSync(socketPath, { force: true });
          resolve();
        });
      }),
  };
}
