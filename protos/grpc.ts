// Binds protobuf-es service descriptors (generated under protos/gen) to
// @grpc/grpc-js: server registration and a promise-based client. Only unary
// methods are supported; the CSI and engine APIs use nothing else.
import * as grpc from '@grpc/grpc-js';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import type { DescMessage, DescMethod, DescService, MessageInitShape, MessageShape } from '@bufbuild/protobuf';
import type { GenService } from '@bufbuild/protobuf/codegenv2';

type UnaryMethod = { methodKind: 'unary'; input: DescMessage; output: DescMessage };
type Methods = Record<string, UnaryMethod>;
type ServiceOf<M extends Methods> = GenService<M>;

/** An error that carries its gRPC status code to the client. */
export class GrpcError extends Error {
  readonly code: grpc.status;
  constructor(code: grpc.status, message: string) {
    super(message);
    this.code = code;
    this.name = 'GrpcError';
  }
}

/** Context a handler sees besides its request. */
export interface CallContext {
  method: string;
  metadata: grpc.Metadata;
  peer: string;
}

export type ServiceImpl<M extends Methods> = {
  [K in keyof M]: (
    request: MessageShape<M[K]['input']>,
    ctx: CallContext,
  ) => Promise<MessageInitShape<M[K]['output']>>;
};

function unaryMethods(service: DescService): DescMethod[] {
  for (const m of service.methods) {
    if (m.methodKind !== 'unary') throw new Error(`${service.typeName}.${m.name}: only unary methods are supported`);
  }
  return service.methods;
}

/** The grpc-js definition of a service: paths and (de)serializers. */
export function serviceDefinition(service: DescService): grpc.ServiceDefinition {
  const def: Record<string, grpc.MethodDefinition<MessageShape<DescMessage>, MessageShape<DescMessage>>> = {};
  for (const m of unaryMethods(service)) {
    def[m.localName] = {
      path: `/${service.typeName}/${m.name}`,
      requestStream: false,
      responseStream: false,
      requestSerialize: (msg: MessageShape<DescMessage>) => Buffer.from(toBinary(m.input, msg)),
      requestDeserialize: (buf: Buffer) => fromBinary(m.input, buf),
      responseSerialize: (msg: MessageShape<DescMessage>) => Buffer.from(toBinary(m.output, msg)),
      responseDeserialize: (buf: Buffer) => fromBinary(m.output, buf),
    };
  }
  return def;
}

/** Wraps a map of errors-as-exceptions handlers; a GrpcError keeps its code,
 * anything else becomes INTERNAL with its message. `wrap` lets the caller add
 * cross-cutting behaviour (logging, locks) around every call. */
export function addService<M extends Methods>(
  server: grpc.Server,
  service: ServiceOf<M>,
  impl: ServiceImpl<M>,
  wrap?: (method: string, run: () => Promise<unknown>, request: unknown) => Promise<unknown>,
): void {
  const handlers: grpc.UntypedServiceImplementation = {};
  for (const m of unaryMethods(service)) {
    const fn = (impl as Record<string, (req: unknown, ctx: CallContext) => Promise<unknown>>)[m.localName];
    if (!fn) throw new Error(`${service.typeName}: no implementation for ${m.name}`);
    handlers[m.localName] = (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      const ctx: CallContext = { method: m.name, metadata: call.metadata, peer: call.getPeer() };
      const run = async () => create(m.output, (await fn.call(impl, call.request, ctx)) as MessageInitShape<DescMessage>);
      (wrap ? wrap(m.name, run, call.request) : run()).then(
        (res) => callback(null, res),
        (err: unknown) => callback(toServiceError(err)),
      );
    };
  }
  server.addService(serviceDefinition(service), handlers);
}

function toServiceError(err: unknown): Partial<grpc.ServiceError> {
  if (err instanceof GrpcError) return { code: err.code, details: err.message, message: err.message };
  const message = err instanceof Error ? err.message : String(err);
  return { code: grpc.status.INTERNAL, details: message, message };
}

export type ServiceClient<M extends Methods> = {
  [K in keyof M]: (request: MessageInitShape<M[K]['input']>, options?: { deadlineMs?: number }) => Promise<MessageShape<M[K]['output']>>;
} & { close(): void };

/** A promise-based client; `address` is a grpc-js target such as unix:///run/vhba/engine.sock. */
export function createClient<M extends Methods>(service: ServiceOf<M>, address: string): ServiceClient<M> {
  const Ctor = grpc.makeGenericClientConstructor(serviceDefinition(service), service.typeName);
  const client = new Ctor(address, grpc.credentials.createInsecure());
  const out: Record<string, unknown> = { close: () => client.close() };
  for (const m of unaryMethods(service)) {
    out[m.localName] = (request: MessageInitShape<DescMessage>, options?: { deadlineMs?: number }) =>
      new Promise((resolve, reject) => {
        const deadline = Date.now() + (options?.deadlineMs ?? 30_000);
        const method = (client as unknown as Record<string, grpc.requestCallback<unknown> & ((...a: unknown[]) => void)>)[m.localName];
        method!.call(client, create(m.input, request), new grpc.Metadata(), { deadline }, (err: grpc.ServiceError | null, res: unknown) =>
          err ? reject(err) : resolve(res),
        );
      });
  }
  return out as ServiceClient<M>;
}
