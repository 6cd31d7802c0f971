import type { RequestHandler } from './$types';

/**
 * Liveness of the Node server alone (does not call the API), for health checks that
 * must not fail just because the backend is down. `/` checks the whole chain instead.
 */
export const GET: RequestHandler = () =>
	new Response('ok\n', { headers: { 'content-type': 'text/plain', 'cache-control': 'no-store' } });
