import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Native training steps and the packed-tarball test (which compiles the addon) are slow.
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // The addon runs its own thread pool: separate processes, not worker threads.
    pool: 'forks',
  },
});
