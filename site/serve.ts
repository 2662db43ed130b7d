// npm run site:serve: the built site over HTTP on 127.0.0.1, with vite's preview server (it
// comes with vitest). The browser tests serve it the same way. Opening site/dist/index.html
// from disk works too; search then loads its index as a script.
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { preview, type PreviewServer } from 'vite';
import { projectRoot } from '../runtime/targets/resolve.ts';

export interface ServedSite {
  url: string;
  close(): Promise<void>;
}

export async function serveSite(dir = path.join(projectRoot, 'site', 'dist'), port = 0): Promise<ServedSite> {
  const server: PreviewServer = await preview({
    configFile: false,
    // A multi-page site: a missing page is a 404, not index.html.
    appType: 'mpa',
    root: dir,
    logLevel: 'silent',
    build: { outDir: dir },
    // Loopback only, and no browser opened by the server.
    preview: { host: '127.0.0.1', port, strictPort: port !== 0, open: false },
  });
  const { port: bound } = server.httpServer.address() as AddressInfo;
  return { url: `http://127.0.0.1:${bound}/`, close: () => server.close() };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const site = await serveSite(undefined, Number(process.env.PORT ?? 4173));
  console.log(`The site is at ${site.url} (Ctrl-C stops it). Build it first with npm run site.`);
  const stop = () => void site.close().then(() => process.exit(0));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
