// Starts an engine control server for tests: `node csi/testing/engine-host.ts
// <control-socket> [memory|real]`. "real" uses hba/engine.ts (the HBA engine)
// when it exists and exports createEngine; otherwise the MemoryEngine double.
// Prints "engine: <kind>" on stdout once the socket is ready; stops on SIGTERM.
import { existsSync } from 'node:fs';
import { startControlServer } from '../../hba/control/server.ts';
import type { Engine } from '../../hba/engine-api.ts';
import { MemoryEngine } from './memory-engine.ts';

/** Loads the real engine if available; undefined when it is not there yet. */
export async function loadRealEngine(): Promise<Engine | undefined> {
  const path = new URL('../../hba/engine.ts', import.meta.url);
  if (!existsSync(path)) return undefined;
  const mod = (await import(path.href)) as { createEngine?: () => Engine | Promise<Engine> };
  return mod.createEngine ? await mod.createEngine() : undefined;
}

if (import.meta.main) {
  const [socketPath, want = 'real'] = process.argv.slice(2);
  if (!socketPath) { process.stderr.write('usage: engine-host.ts <control-socket> [memory|real]\n'); process.exit(2); }
  const real = want === 'real' ? await loadRealEngine().catch((err: Error) => { process.stderr.write(`real engine unavailable: ${err.message}\n`); return undefined; }) : undefined;
  const engine: Engine = real ?? new MemoryEngine();
  const server = await startControlServer(engine, socketPath);
  process.stdout.write(`engine: ${real ? 'real' : 'memory'}\n`);
  const stop = async () => { await server.close(); await engine.close(); process.exit(0); };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}
