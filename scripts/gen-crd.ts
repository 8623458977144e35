// Writes the VirtualDisk CRD generated from operator/api/schema.ts to
// deploy/helm/vhba/crds/virtualdisks.vhba.io.yaml.
//   node scripts/gen-crd.ts           write the file
//   node scripts/gen-crd.ts --check   exit 1 if the committed file is stale (CI)
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CRD_NAME, renderVirtualDiskCrdYaml } from '../operator/crd.ts';

/** Where the generated CRD lives in the repository. */
export const CRD_PATH = join(resolve(dirname(fileURLToPath(import.meta.url)), '..'), 'deploy', 'helm', 'vhba', 'crds', `${CRD_NAME}.yaml`);

function main(argv: string[]): number {
  const wanted = renderVirtualDiskCrdYaml();
  if (argv.includes('--check')) {
    let current = '';
    try {
      current = readFileSync(CRD_PATH, 'utf8');
    } catch {
      // missing: stale
    }
    if (current !== wanted) {
      process.stderr.write(`gen-crd: ${CRD_PATH} is out of date with operator/api/schema.ts; run: node scripts/gen-crd.ts\n`);
      return 1;
    }
    process.stdout.write(`gen-crd: ${CRD_PATH} is up to date\n`);
    return 0;
  }
  mkdirSync(dirname(CRD_PATH), { recursive: true });
  writeFileSync(CRD_PATH, wanted);
  process.stdout.write(`gen-crd: wrote ${CRD_PATH}\n`);
  return 0;
}

if (import.meta.main) process.exitCode = main(process.argv.slice(2));
