// When a request to the API may be sent again after its connection failed.
//
// The Node server keeps connections to the API open between requests. When the API restarts
// (every backend deploy), it closes its idle connections; a request that was sent on one of
// them at that moment fails with a connection error although the API (a new process behind the
// same socket) is about to answer. Browsers resend an idempotent request once in that case; the
// server-side fetch does not, so this does it for GET and HEAD. A timeout is not resent (the
// API is slow, not gone), nor is anything that may change data.

const IDEMPOTENT = new Set(['GET', 'HEAD']);

/** Whether a failed attempt (its thrown value) may be sent once more. */
export function resendable(method: string, cause: unknown): boolean {
	if (!IDEMPOTENT.has(method.toUpperCase())) return false;
	const gaveUp = cause instanceof DOMException && ['TimeoutError', 'AbortError'].includes(cause.name);
	if (gaveUp) return false;
	// fetch reports a network failure as a TypeError (its cause says which: reset, closed, refused).
	return cause instanceof TypeError;
}

/** Runs `attempt`; once more if it failed in a way `resendable` allows. */
export async function withOneResend<T>(method: string, attempt: () => Promise<T>): Promise<T> {
	try {
		return await attempt();
	} catch (cause) {
		if (!resendable(method, cause)) throw cause;
		return await attempt();
	}
}
