// The one wrapper around every CSI call (see protos/grpc.ts addService):
// takes the per-volume try-lock (a concurrent call for the same volume is
// ABORTED, CSI spec "Concurrency"), maps every failure onto a gRPC status
// (errors.ts), and writes one pino line per call: method, volume, code,
// duration. Requests are logged only at debug level, with every field the
// spec marks (csi_secret) replaced by the count of its keys.
import { getOption, toJson, type DescMessage, type DescService, type Message } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { csi_secret } from '../protos/gen/csi/v1/csi_pb.ts';
import { aborted, toGrpcError } from './errors.ts';
import type { KeyedLocks } from './locks.ts';

/** The fields of CSI requests that name what a call works on. */
interface Subject {
  volumeId?: string;
  name?: string;
  sourceVolumeId?: string;
  snapshotId?: string;
  volumeContentSource?: { type: { case?: string; value?: { volumeId?: string; snapshotId?: string } } };
}

/** Lock keys for a request: the volume it touches, the name it creates, the
 * snapshot it deletes, the source it copies. Empty for global calls. */
export function lockKeysOf(method: string, request: unknown): string[] {
  const r = (request ?? {}) as Subject;
  const keys: string[] = [];
  if (r.volumeId) keys.push(`volume:${r.volumeId}`);
  if (method === 'CreateVolume' && r.name) keys.push(`volume-name:${r.name}`);
  if (method === 'CreateSnapshot' && r.name) keys.push(`snapshot-name:${r.name}`);
  if (r.sourceVolumeId) keys.push(`volume:${r.sourceVolumeId}`);
  if (method === 'DeleteSnapshot' && r.snapshotId) keys.push(`snapshot:${r.snapshotId}`);
  const src = r.volumeContentSource?.type;
  if (src?.case === 'volume' && src.value?.volumeId) keys.push(`volume:${src.value.volumeId}`);
  if (src?.case === 'snapshot' && src.value?.snapshotId) keys.push(`snapshot:${src.value.snapshotId}`);
  return keys;
}

/** The identifier a log line names: volume id, else name, else snapshot id. */
export function subjectOf(request: unknown): string | undefined {
  const r = (request ?? {}) as Subject;
  return r.volumeId || r.name || r.snapshotId || r.sourceVolumeId || undefined;
}

/** The request as JSON with every (csi_secret) field replaced by
 * "<redacted N keys>". */
export function redactedRequest(desc: DescMessage, request: Message): Record<string, unknown> {
  const json = toJson(desc, request, { alwaysEmitImplicit: false }) as Record<string, unknown>;
  for (const field of desc.fields) {
    if (!getOption(field, csi_secret)) continue;
    const value = (request as unknown as Record<string, unknown>)[field.localName];
    if (value !== undefined && json[field.jsonName] !== undefined) {
      json[field.jsonName] = `<redacted ${Object.keys(value as object).length} keys>`;
    }
  }
  return json;
}

export interface CallWrapperOptions {
  log: Logger;
  locks: KeyedLocks;
  /** Services whose request types can be redacted for debug logs. */
  services: readonly DescService[];
}

/** The wrap function for addService. */
export function createCallWrapper(opts: CallWrapperOptions) {
  const inputs = new Map<string, DescMessage>();
  for (const s of opts.services) for (const m of s.methods) inputs.set(m.input.typeName, m.input);

  return async function wrapCall(method: string, run: () => Promise<unknown>, request: unknown): Promise<unknown> {
    const start = performance.now();
    const volume = subjectOf(request);
    const line = (code: string) => ({ method, ...(volume ? { volume } : {}), code, ms: +(performance.now() - start).toFixed(2) });
    if (opts.log.isLevelEnabled('debug')) {
      const typeName = (request as { $typeName?: string })?.$typeName;
      const desc = typeName ? inputs.get(typeName) : undefined;
      if (desc) opts.log.debug({ method, request: redactedRequest(desc, request as Message) }, 'csi request');
    }
    const release = opts.locks.tryAcquire(lockKeysOf(method, request));
    if (!release) {
      const err = aborted(`an operation on ${volume} is already in progress; retry later`);
      opts.log.warn({ ...line('ABORTED'), err: err.message }, 'csi call');
      throw err;
    }
    try {
      const res = await run();
      opts.log.info(line('OK'), 'csi call');
      return res;
    } catch (err) {
      const mapped = toGrpcError(err);
      const entry = { ...line(grpc.status[mapped.code] ?? String(mapped.code)), err: mapped.message };
      if (mapped.code === grpc.status.INTERNAL) opts.log.error(entry, 'csi call');
      else opts.log.warn(entry, 'csi call');
      throw mapped;
    } finally {
      release();
    }
  };
}
