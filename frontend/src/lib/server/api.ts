// Server-only client for the innercontext API. Never imported by browser code: the
// API base URL is an internal loopback address and stays on the server.
import { error } from '@sveltejs/kit';
import { PUBLIC_API_BASE } from '$app/env/private';
import { apiFailure } from '#lib/api-failure.ts';
import { describeApiError, isArrayOf, isPricePoint, isProduct } from '#lib/api-data.ts';
import { withOneResend } from '#lib/retry.ts';
import type { NewProduct, PricePoint, Product } from '#lib/types.ts';

/**
 * How long one API call (connect + response + body) may take. It must outlast a restart of the
 * API: systemd holds the API's socket through it, so a request sent meanwhile waits in the
 * socket's queue until the new process answers, which takes 1-2 s on a quiet host and was seen
 * taking 3.4 s on a busy one (a 3 s limit turned those waits into 503 pages during deploys). A
 * hung API still ends in the error page, after this long.
 */
const TIMEOUT_MS = 10_000;

const UNREACHABLE = 'The innercontext API is unreachable right now. Please try again in a moment.';
const BAD_RESPONSE = 'The innercontext API returned an unexpected response.';

type Fetch = typeof fetch;

function reason(cause: unknown): string {
	if (cause instanceof Error) {
		const inner = cause.cause instanceof Error ? ` (${cause.cause.message})` : '';
		return `${cause.name}: ${cause.message}${inner}`;
	}
	return String(cause);
}

/**
 * Sends one request (a GET or HEAD once more if its connection failed: see retry.ts); a
 * network failure or timeout becomes a 503 error page.
 */
async function send(fetch: Fetch, path: string, init: RequestInit = {}): Promise<Response> {
	const method = init.method ?? 'GET';
	try {
		return await withOneResend(method, () =>
			fetch(`${PUBLIC_API_BASE}${path}`, {
				...init,
				headers: { accept: 'application/json', ...init.headers },
				signal: AbortSignal.timeout(TIMEOUT_MS)
			})
		);
	} catch (cause) {
		// The full address is logged for the operator but never shown to the visitor.
		console.error(`[api] ${method} ${PUBLIC_API_BASE}${path} failed: ${reason(cause)}`);
		error(503, UNREACHABLE);
	}
}

/** Reads a JSON body; a timeout while reading it also counts as unreachable. */
async function readJson(response: Response, what: string): Promise<unknown> {
	try {
		return await response.json();
	} catch (cause) {
		console.error(`[api] ${what}: unreadable JSON body: ${reason(cause)}`);
		if (cause instanceof DOMException && cause.name === 'TimeoutError') error(503, UNREACHABLE);
		error(502, BAD_RESPONSE);
	}
}

/**
 * Maps an unsuccessful API answer to the error page shown to the visitor (see api-failure.ts):
 * a 503's body says whether the database is the cause; other bodies are not read.
 */
async function failWithStatus(response: Response, what: string, notFound: string): Promise<never> {
	let body: unknown = null;
	if (response.status === 503) {
		body = await response.json().catch(() => null);
	} else {
		await response.body?.cancel();
	}
	console.error(`[api] ${what}: HTTP ${response.status}`);
	const failure = apiFailure(response.status, body, notFound);
	error(failure.status, { message: failure.message, kind: failure.kind });
}

async function getJson<T>(
	fetch: Fetch,
	path: string,
	guard: (value: unknown) => value is T,
	notFound: string
): Promise<T> {
	const what = `GET ${path}`;
	const response = await send(fetch, path);
	if (!response.ok) await failWithStatus(response, what, notFound);
	const body = await readJson(response, what);
	if (!guard(body)) {
		console.error(`[api] ${what}: response does not match the API contract`);
		error(502, BAD_RESPONSE);
	}
	return body;
}

const isProductList = (value: unknown): value is Product[] => isArrayOf(value, isProduct);
const isPriceList = (value: unknown): value is PricePoint[] => isArrayOf(value, isPricePoint);

/**
 * One page of products in id order: at most `limit` (1..500) whose id is greater than `after`
 * (0 for the first page). See #lib/paging.ts.
 */
export function listProducts(
	fetch: Fetch,
	{ limit, after }: { limit: number; after: number }
): Promise<Product[]> {
	const query = new URLSearchParams({ limit: String(limit), after: String(after) });
	return getJson(fetch, `/products?${query}`, isProductList, 'The product list was not found.');
}

/**
 * The product with this id, or null. The API has no single-product endpoint: this is the page of
 * one product after `id - 1`, which is this one if it exists.
 */
export async function findProduct(fetch: Fetch, id: number): Promise<Product | null> {
	const [product] = await listProducts(fetch, { limit: 1, after: id - 1 });
	return product?.id === id ? product : null;
}

export function listPrices(fetch: Fetch, productId: number): Promise<PricePoint[]> {
	return getJson(fetch, `/products/${productId}/prices`, isPriceList, 'Product not found.');
}

export type CreateResult =
	| { ok: true; product: Product }
	| { ok: false; status: number; message: string };

/**
 * `POST /products`. A rejection by the API (4xx) is returned so the form can show it;
 * an unreachable or failing API becomes an error page like everywhere else.
 */
export async function createProduct(fetch: Fetch, input: NewProduct): Promise<CreateResult> {
	const what = 'POST /products';
	const response = await send(fetch, '/products', {
		method: 'POST',
		headers: { 'content-type': 'application/json' },
		body: JSON.stringify(input)
	});

	if (response.status >= 400 && response.status < 500) {
		const body: unknown = await response.json().catch(() => null);
		console.error(`[api] ${what}: HTTP ${response.status}`);
		return {
			ok: false,
			status: response.status,
			message: describeApiError(body) ?? `The API rejected the product (HTTP ${response.status}).`
		};
	}
	if (!response.ok) await failWithStatus(response, what, 'Not found.');

	const body = await readJson(response, what);
	if (!isProduct(body)) {
		console.error(`[api] ${what}: response does not match the API contract`);
		error(502, BAD_RESPONSE);
	}
	return { ok: true, product: body };
}
