import { defineConfig } from 'vitest/config';

// Two projects: fast unit tests (no QEMU, no root), and end-to-end tests that
// boot a real guest or start real peers (csi-sanity, kube-apiserver).
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['hba/**/*.test.ts', 'lib/**/*.test.ts', 'operator/**/*.test.ts', 'csi/**/*.test.ts', 'cmd/**/*.test.ts', 'test/unit/**/*.test.ts', 'test/fuzz/**/*.test.ts'],
          testTimeout: 20_000,
        },
      },
      {
        test: {
          name: 'e2e',
          include: ['test/e2e/**/*.test.ts'],
          testTimeout: 900_000,
          hookTimeout: 900_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
