/**
 * Start a real Jupyter server with the nbflow server extension for the unit tests of the
 * API client and the models (no mocks: the client talks HTTP to the real handlers).
 */
const { spawn } = require('child_process');
const fs = require('fs');
const net = require('net');
const os = require('os');
const path = require('path');

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => {
      const port = srv.address().port;
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

const NOTEBOOK = {
  nbformat: 4,
  nbformat_minor: 5,
  metadata: { kernelspec: { name: 'python3', display_name: 'Python 3', language: 'python' } },
  cells: [
    {
      cell_type: 'code', id: 'flow', metadata: {}, outputs: [], execution_count: null,
      source: '%%flow sales_report --schedule "0 6 * * *" --timezone Europe/Berlin\nregion = "EU"\ndays = 7\nratio = 0.5\ndry_run = False\n'
    },
    { cell_type: 'code', id: 'task', metadata: {}, outputs: [], execution_count: null, source: '%%task report\ntotal = days * ratio\n' }
  ]
};

module.exports = async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'nbflow-jest-'));
  const serverRoot = path.join(root, 'files');
  fs.mkdirSync(serverRoot);
  fs.writeFileSync(path.join(serverRoot, 'sales.ipynb'), JSON.stringify(NOTEBOOK));
  fs.writeFileSync(path.join(serverRoot, 'broken.ipynb'), '{"not": "a notebook"');
  const port = await freePort();
  const token = 'jest-' + Math.random().toString(36).slice(2);
  const venvPython = path.resolve(__dirname, '..', '..', '.venv', 'bin', 'python');
  const python = process.env.NBFLOW_PYTHON || (fs.existsSync(venvPython) ? venvPython : 'python3');
  const env = {
    ...process.env,
    NBFLOW_HOME: path.join(root, 'home'),
    JUPYTER_RUNTIME_DIR: path.join(root, 'runtime'),
    JUPYTER_CONFIG_DIR: path.join(root, 'config'),
    IPYTHONDIR: path.join(root, 'ipython')
  };
  delete env.NBFLOW_API_URL;
  delete env.NBFLOW_DATABASE_URL;
  const log = fs.openSync(path.join(root, 'server.log'), 'w');
  const proc = spawn(
    python,
    [
      '-m', 'jupyter_server',
      `--ServerApp.port=${port}`, '--ServerApp.ip=127.0.0.1', '--ServerApp.open_browser=False',
      `--IdentityProvider.token=${token}`, `--ServerApp.root_dir=${serverRoot}`,
      '--ServerApp.allow_root=True', '--ServerApp.jpserver_extensions={"nbflow_server": True}',
      '--NbflowApp.services_enabled=False'
    ],
    { env, stdio: ['ignore', log, log], detached: true }
  );
  const base = `http://127.0.0.1:${port}/`;
  const deadline = Date.now() + 60000;
  for (;;) {
    if (proc.exitCode !== null) {
      throw new Error(`jupyter server exited (${proc.exitCode}); see ${root}/server.log:\n` + fs.readFileSync(path.join(root, 'server.log'), 'utf8'));
    }
    try {
      const r = await fetch(base + 'nbflow/api/v1/openapi.json', { headers: { Authorization: `token ${token}` } });
      if (r.ok) break;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) {
      process.kill(-proc.pid, 'SIGTERM');
      throw new Error(`jupyter server did not answer within 60 s; see ${root}/server.log`);
    }
    await new Promise(r => setTimeout(r, 250));
  }
  const info = { base, token, root, serverRoot, pid: proc.pid };
  fs.writeFileSync(path.join(__dirname, '.server.json'), JSON.stringify(info));
  process.env.NBFLOW_TEST_SERVER = JSON.stringify(info);
};
