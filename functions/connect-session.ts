/**
 * `connect-session` (Lambda Invoke): a trusted backend decides whose connection
 * a browser is about to create, and gets a short-lived, single-use connect URL.
 */
import { createConnectSession } from './core/use-cases/connect-session.ts';
import { type BrokerDeps, lambdaHandler } from './adapters/lambda/wiring.ts';
import { invokeHandler } from './adapters/lambda/middleware.ts';
import * as v from './adapters/lambda/validate.ts';
import { InvalidRequest } from './core/domain/errors.ts';

export const createHandler = (deps: BrokerDeps) =>
  invokeHandler(deps, 'connect-session', async (event: unknown) => {
    const payload = v.objectPayload(event, ['ownerId', 'provider', 'returnTo', 'requireConfirmation']);
    const ownerId = v.ownerId(payload.ownerId);
    const provider = v.configuredProvider(deps.config, payload.provider);
    const returnTo = v.returnTo(deps.config, payload.returnTo);
    const requireConfirmation = v.boolean(payload.requireConfirmation, 'requireConfirmation', false);
    // The confirmation code travels back to the app on returnTo: without one it would have nowhere to go.
    if (requireConfirmation && !returnTo) throw new InvalidRequest('requireConfirmation needs a returnTo');
    return createConnectSession(deps, {
      ownerId,
      provider,
      ...(returnTo ? { returnTo } : {}),
      ...(requireConfirmation ? { requireConfirmation } : {}),
    });
  });

export const handler = lambdaHandler('connect-session', createHandler);
