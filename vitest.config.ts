import { defineConfig } from 'vitest/config';

// Two projects. `unit`: pure code, no root, no namespaces, nothing but node; quick, and runnable
// by anyone (`npm run test:unit`). `integration`: real devices in namespaces, needs root
// (scripts/test.sh). `npx vitest run` runs both; test.sh runs them one after the other.
export default defineConfig({
  test: {
    // Tests share one machine's kernel and 2 cores: run files one at a time, keep timeouts generous.
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ['default'],
    projects: [
      {
        extends: true,
        test: { name: 'unit', include: ['test/unit/**/*.test.ts'] },
      },
      {
        extends: true,
        // New files at the top level (from branches in flight) run here too until moved.
        test: { name: 'integration', include: ['test/integration/**/*.test.ts', 'test/*.test.ts'] },
      },
    ],
  },
});
