// The implementation is in lib/ (plain ESM JavaScript, checked by tsc against index.d.ts).
export { createBrokerClient } from './lib/client.js';
export {
  BrokerError,
  BrokerUnavailable,
  ConnectionNotFound,
  InvalidRequest,
  NeedsReauth,
  ProviderUnavailable,
} from './lib/errors.js';
