/** `npm start`: the whole broker on 127.0.0.1:$PORT (default 3000). */
import { startLocalServer } from './server.ts';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const lifetime = Number(process.env.SANDBOX_TOKEN_LIFETIME_SECONDS) || undefined;
// Short sandbox lifetimes are for watching refreshes happen: with the default 5-minute schedule the
// tokens would expire first. Unless the schedule is set, run it four times per token lifetime.
if (lifetime && !process.env.REFRESH_INTERVAL_SECONDS) {
  process.env.REFRESH_INTERVAL_SECONDS = String(Math.max(10, Math.floor(lifetime / 4)));
}
const server = await startLocalServer(lifetime ? { sandboxTokenLifetimeSeconds: lifetime } : {}).catch(
  (err: unknown) => {
    if ((err as { code?: unknown }).code === 'EADDRINUSE') {
      const port = process.env.PORT ?? '3000';
      console.error(
        `crm-oauth-broker: port ${port} is in use (another npm start?). Stop it, or run on another port: PORT=${Number(port) + 1} npm start`,
      );
      process.exit(1);
    }
    throw err;
  },
);
const base = server.deps.config.publicBaseUrl;
console.log(`crm-oauth-broker listening on ${base}`);
console.log(`  open ${base}/ to connect a CRM (sandbox: ${server.sandboxProviders.join(', ') || 'none'})`);
console.log(`  Lambda Invoke API: new LambdaClient({ endpoint: '${server.url}' })`);
console.log(
  `  scheduled refresh every ${server.deps.config.refreshIntervalSeconds} s` +
    (lifetime
      ? `; sandbox tokens live ${lifetime} s (connections made before keep their lifetime until reconnected)`
      : ''),
);
const stop = () => {
  server.close().then(
    () => process.exit(0),
    () => process.exit(1),
  );
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
