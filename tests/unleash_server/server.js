// unleash-server 7.x for Switchboard's scale-mode tests and benchmarks, on loopback only.
// Configured by environment: DATABASE_URL, UNLEASH_PORT, INIT_ADMIN_API_TOKENS,
// INIT_BACKEND_API_TOKENS (see scripts/test-services.sh).
process.env.SEND_TELEMETRY = 'false';
process.env.CHECK_VERSION = 'false';

const unleash = require('unleash-server');

unleash
  .start({
    db: { connectionString: process.env.DATABASE_URL, ssl: false, pool: { min: 0, max: 8 } },
    server: { port: Number(process.env.UNLEASH_PORT || 4242), host: '127.0.0.1' },
    versionCheck: { enable: false },
    telemetry: false,
    logLevel: process.env.UNLEASH_LOG_LEVEL || 'warn',
  })
  .then((instance) => {
    console.log(`unleash-server ${instance.config.server.host}:${instance.config.server.port} ready`);
  })
  .catch((error) => {
    console.error('unleash-server failed to start', error);
    process.exit(1);
  });
