/**
 * Galata (Playwright) configuration: Debian's chromium, no video (needs a downloaded
 * ffmpeg), a real `jupyter lab` started by `jlpm start`.
 */
const baseConfig = require('@jupyterlab/galata/lib/playwright-config');

module.exports = {
  ...baseConfig,
  timeout: 180000,
  expect: { timeout: 30000 },
  workers: 1,
  retries: 0,
  reporter: [['list'], ['html', { open: 'never' }]],
  use: {
    ...baseConfig.use,
    baseURL: 'http://localhost:8888',
    appPath: '/lab',
    video: 'off',
    trace: 'retain-on-failure',
    viewport: { width: 1400, height: 1250 },
    launchOptions: {
      executablePath: process.env.NBFLOW_CHROMIUM || '/usr/bin/chromium',
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--disable-dev-shm-usage'
      ],
      env: { ...process.env, XDG_CONFIG_HOME: process.env.NBFLOW_BROWSER_CONFIG_HOME || process.env.XDG_CACHE_HOME || '/tmp' }
    }
  },
  webServer: {
    command: 'jlpm start',
    url: 'http://localhost:8888/lab',
    timeout: 120000,
    reuseExistingServer: !process.env.CI
  }
};
