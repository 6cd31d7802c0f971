// Paging of the product list (GET /products?limit=N&after=ID, keyset paging by id: see
// backend/README.md "API"). Pure (no SvelteKit), so it is unit-tested.

/** Products on one page of the home page (the API allows 1..500, default 100). */
export const PAGE_SIZE = 100;

/** The largest product id (products.id is a PostgreSQL integer): the API refuses a larger `after`. */
export const PRODUCT_ID_MAX = 2 ** 31 - 1;

/**
 * A product id from a URL (`?after=`, `/products/[id]`): a positive whole number in decimal
 * without sign or leading zeros, at most {@link PRODUCT_ID_MAX}; null for anything else.
 */
export function parseProductId(value: string): number | null {
	if (!/^[1-9]\d{0,9}$/.test(value)) return null;
	const id = Number(value);
	return id <= PRODUCT_ID_MAX ? id : null;
}

/**
 * The `after` of a home page URL: `{ after: null }` when the URL has none (the first page),
 * `{ after: id }` for a valid id, and `{ invalid: true }` for anything else (an empty value, a
 * second `after`, not a product id), which the page answers with a 400.
 */
export function parseAfter(params: URLSearchParams): { after: number | null } | { invalid: true } {
	const [value, ...more] = params.getAll('after');
	if (value === undefined) return { after: null };
	const after = more.length === 0 ? parseProductId(value) : null;
	return after === null ? { invalid: true } : { after };
}

/** One page of rows, cut from `rows` asked for with `limit = size + 1`, and the next page's `after`. */
export function pageOf<T extends { id: number }>(
	rows: readonly T[],
	size: number
): { items: T[]; next: number | null } {
	const items = rows.slice(0, size);
	const last = items.at(-1);
	return { items, next: rows.length > size && last !== undefined ? last.id : null };
}
