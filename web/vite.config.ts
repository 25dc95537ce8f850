import { defineConfig } from 'vitest/config';
import react from '@vitejs/plugin-react';

export default defineConfig({
  plugins: [react()],
  build: { outDir: 'dist', emptyOutDir: true, sourcemap: false },
  server: {
    // `npm run dev` against a node on 8080: CHATTRIO_DEV_TARGET=http://127.0.0.1:8080
    proxy: {
      '/api': process.env.CHATTRIO_DEV_TARGET ?? 'http://127.0.0.1:8080',
      '/ws': { target: process.env.CHATTRIO_DEV_TARGET ?? 'http://127.0.0.1:8080', ws: true },
    },
  },
  test: {
    include: ['test/**/*.test.ts'],
    environment: 'node',
  },
});
