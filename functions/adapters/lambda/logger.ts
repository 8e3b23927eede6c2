import { Logger } from '@aws-lambda-powertools/logger';

/**
 * Structured JSON logs. Rule: log ids (connectionId, provider, error codes),
 * never a token, code, state, cookie, query string, request body or secret.
 */
export const createLogger = (serviceName = 'crm-oauth-broker'): Logger => new Logger({ serviceName });

export { errorFields } from '../../core/domain/error-fields.ts';
