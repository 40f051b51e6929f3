// The official Node SDK (unleash-client) pointed at Switchboard's client API: prints the
// decisions for a flag and a list of workspaces as JSON. Used by the compatibility tests.
// Usage: node node_sdk_check.js URL TOKEN FLAG WORKSPACE...
const { initialize } = require('unleash-client');

const [url, token, flag, ...workspaces] = process.argv.slice(2);
const client = initialize({
  url,
  appName: 'switchboard-node-compat',
  customHeaders: { Authorization: token },
  refreshInterval: 60_000,
  metricsInterval: 60_000,
  disableMetrics: true,
  storageProvider: undefined,
});
const timer = setTimeout(() => {
  console.error('unleash-client did not synchronize within 10 s');
  process.exit(2);
}, 10_000);
client.on('error', (error) => console.error(`unleash-client error: ${error.message}`));
client.on('synchronized', () => {
  clearTimeout(timer);
  const decisions = {};
  for (const workspaceId of workspaces) {
    decisions[workspaceId] = client.isEnabled(flag, { properties: { workspaceId } });
  }
  console.log(JSON.stringify(decisions));
  client.destroy();
  process.exit(0);
});
