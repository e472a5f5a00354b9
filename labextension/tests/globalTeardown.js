/** Stop the Jupyter server that globalSetup started (only that process group). */
const fs = require('fs');
const path = require('path');

module.exports = async () => {
  const file = path.join(__dirname, '.server.json');
  if (!fs.existsSync(file)) return;
  const info = JSON.parse(fs.readFileSync(file, 'utf8'));
  try {
    process.kill(-info.pid, 'SIGTERM');
  } catch {
    // already gone
  }
  for (let i = 0; i < 40; i++) {
    try {
      process.kill(info.pid, 0);
    } catch {
      break;
    }
    await new Promise(r => setTimeout(r, 250));
  }
  fs.rmSync(file);
  fs.rmSync(info.root, { recursive: true, force: true });
};
