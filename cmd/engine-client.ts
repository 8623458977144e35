// What the CLI verbs that talk to a running engine share: where the engine's
// control socket is (--engine, else $VHBA_ENGINE, else the default path), the
// gRPC client, and error messages that say what to do.
import * as grpc from '@grpc/grpc-js';
import { isAbsolute } from 'node:path';
import { createClient, type ServiceClient } from '../protos/grpc.ts';
import { EngineService } from '../protos/gen/vhba/hba/v1/hba_pb.ts';
import { UsageError } from './args.ts';

/** Where `vhba engine` listens unless told otherwise. */
export const DEFAULT_ENGINE_SOCKET = '/run/vhba/engine.sock';

/** A client of the engine's control API (protos/vhba/hba/v1/hba.proto). */
export type EngineClient = ServiceClient<(typeof EngineService)['method']>;

/** The engine address: the flag, else $VHBA_ENGINE, else unix://DEFAULT_ENGINE_SOCKET. */
export function engineAddress(command: string, flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  const value = flag ?? env.VHBA_ENGINE ?? `unix://${DEFAULT_ENGINE_SOCKET}`;
  const path = value.startsWith('unix://') ? value.slice('unix://'.length) : value;
  if (!isAbsolute(path)) {
    throw new UsageError(`vhba ${command}: --engine ${JSON.stringify(value)} is not a unix socket address; allowed: unix:///absolute/path or /absolute/path`);
  }
  return `unix://${path}`;
}

/** Connects (lazily: the first call finds out whether anyone listens). */
export function connectEngine(address: string): EngineClient {
  return createClient(EngineService, address);
}

/** One line that says what went wrong and, where it helps, what to do. */
export function describeEngineError(error: unknown, address: string): string {
  const e = error as Partial<grpc.ServiceError>;
  if (typeof e.code !== 'number') return (error as Error).message ?? String(error);
  if (e.code === grpc.status.UNAVAILABLE || e.code === grpc.status.DEADLINE_EXCEEDED) {
    return `no engine answers at ${address} (${e.details ?? e.message}); start one with 'vhba engine' or 'vhba serve', or point --engine (or VHBA_ENGINE) at its control socket`;
  }
  return `${grpc.status[e.code] ?? e.code}: ${e.details ?? e.message}`;
}

/** Parses a non-negative integer flag within [0, max]. */
export function intFlag(command: string, name: string, value: string | undefined, max: number): number {
  if (value === undefined || value === '') throw new UsageError(`vhba ${command}: missing required flag --${name}`);
  if (!/^[0-9]{1,6}$/.test(value) || Number(value) > max) {
    throw new UsageError(`vhba ${command}: --${name} ${JSON.stringify(value)} is not allowed; allowed: an integer 0–${max}`);
  }
  return Number(value);
}
