// What a visitor is told when the API answered with an error status: the error page's status,
// its words, and its title. Pure (no SvelteKit), so it is unit-tested.

/** What the API answers (503) when its database cannot be reached (backend/innercontext/errors.py). */
const DATABASE_UNAVAILABLE_CODE = 'database_unavailable';

export const DATABASE_UNAVAILABLE =
	'The database that stores the products is unavailable right now. Please try again shortly.';
export const API_UNAVAILABLE =
	'The innercontext API is temporarily unavailable. Please try again in a moment.';

/** An error page: its status, the message shown, and whether the database is the cause. */
export type ApiFailure = { status: number; message: string; kind?: 'database' };

/** Whether an API error body says the database cannot be reached. */
export function isDatabaseUnavailable(body: unknown): boolean {
	return (
		typeof body === 'object' &&
		body !== null &&
		(body as Record<string, unknown>).error === DATABASE_UNAVAILABLE_CODE
	);
}

/**
 * The error page for an unsuccessful API answer (`status`, its JSON `body` or null): 404 with
 * `notFound`; 503 saying the database is unavailable when the API says so, else that the API
 * is; anything else is a bad gateway that names the API's status.
 */
export function apiFailure(status: number, body: unknown, notFound: string): ApiFailure {
	if (status === 404) return { status: 404, message: notFound };
	if (status === 503) {
		return isDatabaseUnavailable(body)
			? { status: 503, message: DATABASE_UNAVAILABLE, kind: 'database' }
			: { status: 503, message: API_UNAVAILABLE };
	}
	return { status: 502, message: `The innercontext API answered with an error (HTTP ${status}).` };
}

/** The error page's title for its status (and kind, when the database is the cause). */
export function errorTitle(status: number, kind?: string): string {
	if (kind === 'database') return 'The database is unavailable';
	if (status === 503 || status === 504) return 'The innercontext API is unreachable';
	if (status === 502) return 'The innercontext API is not working';
	if (status === 404) return 'Page not found';
	return 'Something went wrong';
}
