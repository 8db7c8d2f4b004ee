import { defineConfig } from "vitest/config";
import react from "@vitejs/plugin-react";

// The Go binary embeds dist/ (see embed.go); the build goes to dist/app so
// that the committed dist/README.md keeps the embed valid without a build.
// `npm run dev` (`make web-dev`) proxies the API to a running WebUI started
// with --dev: TSYMBIOTE_WEBUI_URL, http://127.0.0.1:3621 by default.
const webui = process.env.TSYMBIOTE_WEBUI_URL || "http://127.0.0.1:3621";

export default defineConfig({
  plugins: [react()],
  build: { outDir: "dist/app", emptyOutDir: true, chunkSizeWarningLimit: 1024 },
  server: {
    host: "127.0.0.1",
    proxy: { "/api": webui, "/healthz": webui, "/metrics": webui },
  },
  test: { include: ["src/**/*.test.ts"], environment: "node" },
});
