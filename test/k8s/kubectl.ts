// Runs the Go-built kubectl (tools.ts) against a kubeconfig, for tests.
import { spawn } from 'node:child_process';
import { toolPath } from './tools.ts';

/** What a kubectl run printed and how it ended. */
export interface KubectlResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface KubectlOptions {
  /** Written to kubectl's stdin (e.g. a manifest for `apply -f -`). */
  input?: string;
  /** Kill kubectl after this long. Default 60 s. */
  timeoutMs?: number;
}

/** Runs `kubectl --kubeconfig <kubeconfigPath> <args>`; never throws for a non-zero exit. */
export function kubectl(kubeconfigPath: string, args: readonly string[], opts: KubectlOptions = {}): Promise<KubectlResult> {
  return new Promise((resolveRun, reject) => {
    const child = spawn(toolPath('kubectl'), ['--kubeconfig', kubeconfigPath, ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
      timeout: opts.timeoutMs ?? 60_000,
      env: { ...process.env, KUBECONFIG: kubeconfigPath },
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => err.push(chunk));
    child.once('error', reject);
    child.once('close', (code) =>
      resolveRun({ code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }),
    );
    child.stdin.end(opts.input ?? '');
  });
}

/** Like kubectl() but throws, with kubectl's stderr, unless it exits 0; resolves to stdout. */
export async function kubectlOk(kubeconfigPath: string, args: readonly string[], opts: KubectlOptions = {}): Promise<string> {
  const result = await kubectl(kubeconfigPath, args, opts);
  if (result.code !== 0) {
    throw new Error(`kubectl ${args.join(' ')} exited ${result.code}: ${result.stderr.trim()}`);
  }
  return result.stdout;
}
