/** The real Jupyter server started by globalSetup, and an API client bound to it. */
import * as fs from 'fs';
import * as path from 'path';
import { NbflowApi } from '../src/api';

export interface ServerInfo {
  base: string;
  token: string;
  root: string;
  serverRoot: string;
}

export function server(): ServerInfo {
  return JSON.parse(fs.readFileSync(path.join(__dirname, '.server.json'), 'utf8'));
}

export function client(): NbflowApi {
  const { base, token } = server();
  return new NbflowApi((p, init) =>
    fetch(base + p, {
      ...init,
      headers: { ...(init.headers as Record<string, string>), Authorization: `token ${token}` }
    })
  );
}
