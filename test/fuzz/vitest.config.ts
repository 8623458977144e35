// test/fuzz/ property-based fuzz tests (issue 9). Also run by the root config
// once its unit project includes 'test/fuzz/**/*.test.ts'; until then:
//   npx vitest run --config test/fuzz/vitest.config.ts
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    root: new URL('../..', import.meta.url).pathname,
    include: ['test/fuzz/**/*.test.ts', 'test/unit/regressions*.test.ts'],
    testTimeout: 60_000,
  },
});
