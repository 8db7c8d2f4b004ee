import { defineConfig } from "vitest/config";
import react from "@vitejs/plugin-react";

// The Go binary embeds dist/ (see embed.go); the build goes to dist/app so
// that the committed dist/README.md keeps the embed valid without a build.
// `npm run dev` proxies the API to a WebUI started with --dev.
export default defineConfig({
  plugins: [react()],
  build: { outDir: "dist/app", emptyOutDir: true, chunkSizeWarningLimit: 1024 },
  server: {
    proxy: { "/api": "http://127.0.0.1:3621", "/healthz": "http://127.0.0.1:3621", "/metrics": "http://127.0.0.1:3621" },
  },
  test: { include: ["src/**/*.test.ts"], environment: "node" },
});
