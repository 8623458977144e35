// Where the Go-built test tools live: scripts/build-go-tools.sh installs
// kube-apiserver, etcd, kubectl, csi-sanity and helm into $VHBA_CACHE/bin
// (default ~/.cache/vhba/bin). Tests look them up here and skip, naming the
// build command, when one is missing.
import { accessSync, constants } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cacheDir } from '../cache.ts';

/** The Go tools scripts/build-go-tools.sh builds. */
export const GO_TOOLS = ['kube-apiserver', 'etcd', 'kubectl', 'csi-sanity', 'helm'] as const;
export type GoTool = (typeof GO_TOOLS)[number];

/** The repository root (two levels above this file). */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The build command to print when a tool is missing. */
export const BUILD_TOOLS_COMMAND = 'bash scripts/build-go-tools.sh';

/** $VHBA_CACHE, or the default of test/cache.ts (as scripts/build-go-tools.sh computes it). */
export { cacheDir };

/** Absolute path of a tool's binary (which may not exist yet). */
export function toolPath(tool: GoTool): string {
  return join(cacheDir(), 'bin', tool);
}

/** The tools among `tools` that are not built (not an executable file). */
export function missingTools(tools: readonly GoTool[]): GoTool[] {
  return tools.filter((tool) => {
    try {
      accessSync(toolPath(tool), constants.X_OK);
      return false;
    } catch {
      return true;
    }
  });
}

/** A one-line reason to skip a test because tools are missing, or undefined if all are built. */
export function missingToolsReason(tools: readonly GoTool[]): string | undefined {
  const missing = missingTools(tools);
  if (missing.length === 0) return undefined;
  return `not built: ${missing.join(', ')} (in ${join(cacheDir(), 'bin')}); run \`${BUILD_TOOLS_COMMAND}\``;
}
